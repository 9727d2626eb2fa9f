#!/bin/bash
# Builds leanmesh.so for every row of envoy-build/versions.tsv whose SDK module can be downloaded and
# verified here: bin/leanmesh-envoy<envoy>.so, built with the row's build tag and a modfile pinning
# the row's SDK (envoy-build/sdkmod.sh). A row whose SDK is not served (or not verifiable) is skipped
# with the reason; any other failure fails the target. bin/so-matrix.tsv records the outcome per row
# for envoy-build's tests (TestSoMatrix checks every built file's ABI, links and glibc).
#
# usage (from the repository root): envoy-build/so-matrix.sh [istio-version...]   (default: all rows)
set -uo pipefail
GO=${GO:-go}
BIN=${BIN:-bin}
matrix=${MATRIX:-envoy-build/versions.tsv}
manifest=$BIN/so-matrix.tsv
mkdir -p "$BIN/sdk"
want=" $* "
rows=$(awk '!/^#/ && NF >= 9' "$matrix")
[ -n "$rows" ] || { echo "so-matrix: no rows in $matrix" >&2; exit 1; }

printf '# written by envoy-build/so-matrix.sh; istio envoy sdk tag status file detail\n' >"$manifest.tmp"
printf '%-8s %-7s %-8s %-10s %-8s %-9s %-11s %s\n' ISTIO ENVOY SDK TAG STATUS SIZE MAX_GLIBC "FILE / REASON"
failed=0
while read -r istio envoy sdk tag _builder _bglibc _proxy pglibc _def; do
  if [ "$want" != "  " ] && [[ "$want" != *" $istio "* ]]; then continue; fi
  mod=$BIN/sdk/go.$tag.mod
  out=$BIN/leanmesh-envoy$envoy.so
  log=$BIN/sdk/build-$tag.log
  if ! GO=$GO envoy-build/sdkmod.sh "$sdk" "$mod" >"$log" 2>&1; then
    echo "so-matrix: sdkmod.sh $sdk failed:" >&2; cat "$log" >&2; exit 1
  fi
  # -mod=mod lets go add the go.sum lines the pinned SDK needs, into the alternate .sum only.
  if GOFLAGS=-mod=mod CGO_ENABLED=1 $GO build -modfile="$mod" -tags "$tag" \
      -buildmode=c-shared -trimpath -ldflags "-s -w" -o "$out" ./filters/cmd/leanmesh >"$log" 2>&1; then
    size=$(stat -c %s "$out")
    glibc=$(readelf --dyn-syms -W "$out" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
    printf '%-8s %-7s %-8s %-10s %-8s %-9s %-11s %s\n' "$istio" "$envoy" "$sdk" "$tag" built \
      "$((size / 1024 / 1024))MB" "${glibc:-none}" "$out (proxy glibc $pglibc)"
    printf '%s\t%s\t%s\t%s\tbuilt\t%s\t%s\n' "$istio" "$envoy" "$sdk" "$tag" "$out" "$size" >>"$manifest.tmp"
  elif grep -qE "github.com/envoyproxy/envoy@$sdk: (reading|verifying)|envoyproxy/envoy@v[^ ]*: .*(403|404|410|not available)" "$log"; then
    reason=$(grep -m1 -oE "github.com/envoyproxy/envoy@$sdk: .*" "$log" | cut -c1-200)
    rm -f "$out"
    printf '%-8s %-7s %-8s %-10s %-8s %-9s %-11s %s\n' "$istio" "$envoy" "$sdk" "$tag" skipped - - \
      "SDK module not available/verifiable here: $reason"
    printf '%s\t%s\t%s\t%s\tskipped\t-\t%s\n' "$istio" "$envoy" "$sdk" "$tag" "$reason" >>"$manifest.tmp"
  else
    printf '%-8s %-7s %-8s %-10s %-8s\n' "$istio" "$envoy" "$sdk" "$tag" FAILED
    sed 's/^/    /' "$log" >&2
    printf '%s\t%s\t%s\t%s\tfailed\t-\tsee %s\n' "$istio" "$envoy" "$sdk" "$tag" "$log" >>"$manifest.tmp"
    failed=1
  fi
done <<<"$rows"
mv "$manifest.tmp" "$manifest"
exit $failed
