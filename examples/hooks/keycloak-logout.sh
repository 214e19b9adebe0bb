#!/bin/sh
# tokenwatch exec hook: log a Keycloak user out. Usage: keycloak-logout.sh USER_ID
# Needs KC_URL (https://sso.example.com), KC_REALM, KC_CLIENT_ID and KC_CLIENT_SECRET in the
# environment of tokenwatch (the secret e.g. from a systemd credential). Exit 0 = done;
# anything else makes tokenwatch retry with backoff. The record arrives on stdin (unused).
set -eu
user="${1:?user id}"
[ -n "$user" ] || { echo "no user in the detection" >&2; exit 1; }
token=$(curl -fsS -X POST "$KC_URL/realms/$KC_REALM/protocol/openid-connect/token" \
  -d grant_type=client_credentials \
  --data-urlencode "client_id=$KC_CLIENT_ID" \
  --data-urlencode "client_secret=$KC_CLIENT_SECRET" |
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "no admin token from Keycloak" >&2; exit 1; }
curl -fsS -X POST -H "Authorization: Bearer $token" \
  "$KC_URL/admin/realms/$KC_REALM/users/$user/logout"
