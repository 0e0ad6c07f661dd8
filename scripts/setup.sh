#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build Tessera: libclang (RocksDB's bindgen).
# Idempotent; does nothing when the library is already present.
set -euo pipefail
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  echo "setup: installing libclang-dev for RocksDB's bindgen" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
