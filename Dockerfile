# syntax=docker/dockerfile:1
#
# docker build -t tokenwatch .
# docker run -d --name tokenwatch -p 9847:9847 \
#   -v /var/log/nginx:/var/log/nginx:ro -v tokenwatch-state:/var/lib/tokenwatch tokenwatch
#
# Mount your own config at /etc/tokenwatch/tokenwatch.toml (the image ships the built-in
# default, which tails /var/log/nginx/access.log in the `tokenwatch` log format).

# ---- build: the README's build command, nothing else
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/tokenwatch /out/tokenwatch

# ---- runtime: glibc (the binary links only libc, libm and libgcc_s) and bash, whose
# /dev/tcp serves as the health check client: no curl, no package installs.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 tokenwatch \
    && useradd --system --uid 10001 --gid tokenwatch --no-create-home \
       --home-dir /var/lib/tokenwatch --shell /usr/sbin/nologin tokenwatch \
    && mkdir -p /etc/tokenwatch /var/lib/tokenwatch \
    && chown tokenwatch:tokenwatch /var/lib/tokenwatch
COPY --from=build /out/tokenwatch /usr/local/bin/tokenwatch
COPY src/config/default.toml /etc/tokenwatch/tokenwatch.toml

USER 10001:10001
VOLUME ["/etc/tokenwatch", "/var/lib/tokenwatch"]
EXPOSE 9847
STOPSIGNAL SIGTERM
# GET /healthz on the port the CMD below listens on; healthy on "HTTP/1.x 200".
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9847 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1\\.[01] 200 '"]
ENTRYPOINT ["tokenwatch"]
CMD ["run", "--config", "/etc/tokenwatch/tokenwatch.toml", "--listen", "0.0.0.0:9847"]
