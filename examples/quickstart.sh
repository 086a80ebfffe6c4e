#!/bin/sh
# Builds tideway, starts two replicas of the example app on 127.0.0.1:9001 and :9002, and runs tideway in
# front of them on 127.0.0.1:8080 with examples/tideway.toml. Ctrl-C stops everything.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p tideway
python3 examples/apps/hello.py --port 9001 &
python3 examples/apps/hello.py --port 9002 &
trap 'kill $(jobs -p) 2>/dev/null' EXIT INT TERM
exec_status=0
./target/release/tideway serve --config examples/tideway.toml || exec_status=$?
exit "$exec_status"
