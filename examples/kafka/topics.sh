#!/bin/sh
# Creates tokenwatch's topics with Apache Kafka's kafka-topics.sh (Redpanda: rpk topic
# create with the same settings). Choose the partition count up front: it is the unit of
# scale (at most that many workers per topic) and changing it later moves keys between
# partitions, so state learned for a token or an address would be on the wrong worker.
set -eu
BOOTSTRAP="${BOOTSTRAP:-kafka-1:9092}"
PARTITIONS="${PARTITIONS:-12}"
REPLICAS="${REPLICAS:-3}"

# Events: kept long enough to rebuild a worker that was down over a weekend.
for t in auth.by_token auth.by_ip; do
  kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$t" \
    --partitions "$PARTITIONS" --replication-factor "$REPLICAS" \
    --config retention.ms=259200000 --config min.insync.replicas=2
done

# Detections: ONE partition (one active responder holds the global freeze cap); keyed by
# detection id. Compaction keeps one record per id; retention bounds what a standby reads
# back at takeover.
kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic detections \
  --partitions 1 --replication-factor "$REPLICAS" \
  --config cleanup.policy=compact,delete --config retention.ms=604800000 \
  --config min.insync.replicas=2

# Frozen tokens for the edges' /authz (README "Freezing at the gateway"): compacted only,
# never deleted by age, so an edge that starts reads exactly the frozen set. A few
# partitions are plenty (every edge reads them all).
kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic frozen \
  --partitions 3 --replication-factor "$REPLICAS" \
  --config cleanup.policy=compact --config min.insync.replicas=2

# Tokens accepted anywhere (README "Running on several hosts", worker): the token stage
# announces each token's first accepted check, every IP stage reads it all. Compacted only:
# one record per token, kept as long as the token is.
kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic tokens.known \
  --partitions 3 --replication-factor "$REPLICAS" \
  --config cleanup.policy=compact --config min.insync.replicas=2
