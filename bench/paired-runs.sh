#!/bin/sh
# Paired, alternated whole-process runs: bench/paired-runs.sh PAIRS 'label=command' 'label=command' ...
# Each round runs every command once, starting one later each round, so drift on a shared machine falls on all;
# prints every run (wall, user, sys seconds, peak RSS KiB) and the medians. Commands run through sh -c.
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
for spec in "$@"; do
  label=${spec%%=*}
  sort -n "$out/$label" | awk -v l="$label" '{ w[NR]=$1; u[NR]=$2; s[NR]=$3; m[NR]=$4; all=all" "$1 }
    END { h=int((NR+1)/2); printf "%-14s median wall %.3f s (user %.2f sys %.2f, rss %d MiB)  runs:%s\n", l, w[h], u[h], s[h], m[h]/1024, all }'
done
rm -rf "$out"
