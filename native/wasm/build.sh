#!/usr/bin/env bash
# Rebuild native/wasm/xts.wasm from xts.c. Reproducible: no debug info, names or
# producer sections are kept, and paths are not embedded, so two builds give the
# same bytes with the same clang. Needs clang + wasm-ld (lld) with wasm32 support.
# --stack-first: a stack overflow traps at address 0 instead of running into the data.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/xts.wasm}"
CLANG="${CLANG:-clang}"
tmp="$(mktemp "${out}.tmp.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cd "$here"
"$CLANG" --target=wasm32 -msimd128 -O3 -nostdlib -ffreestanding \
  -fno-builtin -ffile-prefix-map="$here"=. \
  -Wall -Wextra -Werror \
  -Wl,--no-entry -Wl,--strip-all -Wl,--stack-first -Wl,-z,stack-size=16384 \
  -Wl,--export=xts_key_ptr -Wl,--export=xts_buf_ptr -Wl,--export=xts_buf_size \
  -Wl,--export=xts_set_key -Wl,--export=xts_crypt -Wl,--export=xts_wipe \
  -o "$tmp" xts.c
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
