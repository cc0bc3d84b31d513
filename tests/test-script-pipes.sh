#!/bin/bash
# The test and bench scripts run under `set -o pipefail`, where
# `cmd | grep -q PAT` fails at random: grep -q exits at its first match and a
# later write by cmd dies of SIGPIPE, making the pipeline 141 (a clean-clone
# CI run failed parallels-write that way; '! ... | grep -q' and
# '... | grep -q && fail' pass then when they should fail).  lib.sh's
# `matches` reads all of its input instead.  This keeps the form out of every
# script: each line that pipes into grep -q is named.
. "$(dirname "$0")/lib.sh"
cd "$VD_SRC"
files=()
for f in tests/*.sh tests/fuzz/*.sh bench/*.sh; do
    [ "$f" = tests/test-script-pipes.sh ] || files+=("$f")   # (its own probes)
done
for f in tests/fixtures/*; do
    [ -f "$f" ] && head -c 64 "$f" | matches -E '^#!.*(ba)?sh' && files+=("$f")
done
[ ${#files[@]} -gt 80 ] || fail "only ${#files[@]} scripts found under $VD_SRC"
# A pipe (not '||') into grep with -q among its options, outside comments.
bad=$(grep -nP '^(?!\s*#).*(?<!\|)\|\s*grep\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*q' "${files[@]}" || true)
[ -z "$bad" ] || fail "'| grep -q' under pipefail (use '| matches'):"$'\n'"$bad"
# The check itself finds the form it is there for.
probe=$(printf '%s\n' 'x | grep -q y || z' 'x | grep -i -q y' '# x | grep -q y' 'x || grep -q y f' |
        grep -cP '^(?!\s*#).*(?<!\|)\|\s*grep\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*q' || true)
[ "$probe" = 2 ] || fail "the pattern matched $probe of the 2 probe lines that pipe into grep -q"
echo "ok: ${#files[@]} scripts, no '| grep -q'"
