#!/usr/bin/env bash
# Builds the release binary exactly as the Dockerfile's build stage does (the
# Dockerfile runs this script), then checks that it fits the runtime image:
#
#   default    x86_64-unknown-linux-gnu, for gcr.io/distroless/cc-debian12
#              (glibc 2.36, libgcc_s): every shared library must be one that
#              image has, and no symbol may need a glibc newer than 2.36.
#   --musl     x86_64-unknown-linux-musl, a static binary for
#              gcr.io/distroless/static-debian12 (needs the rustup target and
#              musl-tools: aws-lc-sys compiles its C with musl-gcc through the
#              cc crate; its bindings are pregenerated for this target, so
#              neither cmake nor clang is needed).
#
# Usage: scripts/build-static.sh [--musl] [--out FILE] [--no-smoke]
# Prints the binary's path and size; --out copies it there.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
out=""
smoke=1
while [ $# -gt 0 ]; do
  case "$1" in
    --musl) target=x86_64-unknown-linux-musl ;;
    --out) out="$2"; shift ;;
    --no-smoke) smoke=0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

# The runtime image's C library (Debian 12): the build host must not be newer.
max_glibc=2.36
# What distroless/cc-debian12 provides besides the dynamic loader.
allowed_libs='^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|/lib64/ld-linux-x86-64\.so\.2)$'

if [ "$target" = x86_64-unknown-linux-musl ]; then
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "the $target target is not installed (rustup target add $target; needs the network)" >&2
    exit 1
  fi
  command -v musl-gcc >/dev/null || { echo "musl-gcc not found (apt-get install musl-tools)" >&2; exit 1; }
fi

# Smaller image, same code: symbols stripped (panics still name the location).
export CARGO_PROFILE_RELEASE_STRIP=symbols
export CARGO_TERM_COLOR=never
cargo build --release --locked -p pushroll --bin pushroll --target "$target"
bin="target/$target/release/pushroll"

echo "== $bin"
if [ "$target" = x86_64-unknown-linux-gnu ]; then
  bad=$(ldd "$bin" | awk '{print $1}' | grep -Ev "$allowed_libs" || true)
  if [ -n "$bad" ]; then
    echo "links libraries distroless/cc-debian12 does not have:" >&2
    echo "$bad" >&2
    exit 1
  fi
  newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  if [ "$(printf '%s\n%s\n' "$newest" "$max_glibc" | sort -V | tail -1)" != "$max_glibc" ]; then
    echo "needs glibc $newest; the runtime image has $max_glibc (build on Debian 12)" >&2
    exit 1
  fi
  echo "dynamic: $(ldd "$bin" | awk '{print $1}' | tr '\n' ' ')"
  echo "newest glibc symbol: $newest (runtime has $max_glibc)"
else
  if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'statically linked\|not a dynamic'; then
    echo "the musl binary is not static:" >&2
    ldd "$bin" >&2
    exit 1
  fi
  echo "static"
fi

"$bin" --version

if [ "$smoke" = 1 ]; then
  # The binary serves: start the demo on a free port, wait for its
  # "listening" line, ask /readyz, stop it.
  log=$(mktemp)
  "$bin" --log-format json serve --demo --listen 127.0.0.1:0 2>"$log" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
  addr=""
  for _ in $(seq 1 100); do
    addr=$(grep -o '"addr":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "the demo did not start:" >&2; cat "$log" >&2; exit 1; }
  if command -v curl >/dev/null; then
    curl -fsS "http://$addr/readyz"
    echo
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  trap - EXIT
  rm -f "$log"
  echo "smoke test: the demo served on $addr"
fi

size=$(stat -c %s "$bin")
echo "size: $size bytes ($(( size / 1024 / 1024 )) MiB)"
if [ -n "$out" ]; then
  cp "$bin" "$out"
  echo "copied to $out"
fi
