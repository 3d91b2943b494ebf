#!/bin/sh
# An unwrapped (noWrapper + writeMetadata) delivery, as the Pub/Sub emulator sends it.
# Usage: examples/push-unwrapped.sh [URL]   (default http://127.0.0.1:8080/push)
exec curl -sS "${1:-http://127.0.0.1:8080/push}" \
  -H 'Content-Type: application/x-www-form-urlencoded' \
  -H 'x-goog-pubsub-message-id: 44' \
  -H 'x-goog-pubsub-publish-time: 2026-11-26T22:48:01.112Z' \
  -H 'x-goog-pubsub-subscription-name: projects/demo-project/subscriptions/gcr-push-raw' \
  -H 'source: artifact-registry' \
  --data-binary @"$(dirname "$0")/ar-insert-tag.json"
