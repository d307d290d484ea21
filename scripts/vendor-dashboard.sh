#!/bin/sh
# Refresh the dashboard's vendored graph-layout library from the npm registry.
# The version is pinned here; bump it, run this script, look at a build page, commit.
set -eu
DAGRE_VERSION=3.1.3
here=$(cd "$(dirname "$0")/.." && pwd)
static="$here/src/databuild/service/dashboard/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@dagrejs/dagre@$DAGRE_VERSION" >/dev/null && tar xzf ./*.tgz)
mkdir -p "$static"
# The source map is not shipped, so drop the comment that points at it.
grep -v '^//# sourceMappingURL=' "$work/package/dist/dagre.min.js" > "$static/dagre.min.js"
cp "$work/package/LICENSE" "$static/dagre.LICENSE"
cp "$work/package/dist/dagre.min.js.LEGAL.txt" "$static/dagre.min.js.LEGAL.txt"
echo "vendored @dagrejs/dagre $DAGRE_VERSION into $static"
