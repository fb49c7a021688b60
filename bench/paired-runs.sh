#!/bin/sh
# Paired, alternated whole-process runs: bench/paired-runs.sh PAIRS 'label=command' 'label=command' ...
# Each round runs every command once, starting one later each round, so drift on a shared machine falls on all;
# prints the median wall, user and sys seconds (each its own median), the highest peak RSS and every run's wall. Commands run through sh -c.
set -eu
pairs=$1
shift
out=$(mktemp -d)
round=0
while [ "$round" -lt "$pairs" ]; do
  n=$#
  k=0
  while [ "$k" -lt "$n" ]; do
    i=$(( (round + k) % n + 1 ))
    eval "spec=\${$i}"
    label=${spec%%=*}
    cmd=${spec#*=}
    /usr/bin/time -f "%e %U %S %M" -o "$out/t" sh -c "$cmd" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
    cat "$out/t" >>"$out/$label"
    k=$((k + 1))
  done
  round=$((round + 1))
done
med() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", v[int((NR + 1) / 2)] }'; }
for spec in "$@"; do
  label=${spec%%=*}
  f="$out/$label"
  printf '%-12s median wall %s s, user %s s, sys %s s, peak RSS %s KiB; wall of each run:%s\n' "$label" \
    "$(cut -d' ' -f1 "$f" | med)" "$(cut -d' ' -f2 "$f" | med)" "$(cut -d' ' -f3 "$f" | med)" "$(cut -d' ' -f4 "$f" | sort -n | tail -1)" \
    "$(cut -d' ' -f1 "$f" | tr '\n' ' ' | sed 's/^/ /')"
done
rm -rf "$out"
