# The floor's whole visit to a node, as one `sh -c` script: what any tool must do at least.
# stdin: a tar of the desired tree (`<svc>/<file>` for every service of the node).
# $1: the runtime root. Unpacks into a scratch folder, moves each service whose files differ
# into `<root>/state/services/<svc>`, and brings each moved service up (one stand-in call).
# With $2 = plan it changes nothing: it streams the deployed tree back (what a planner reads).
set -eu
root=$1; mode=${2:-apply}
svc_dir=$root/state/services
if [ "$mode" = plan ]; then
  mkdir -p "$svc_dir"; cd "$svc_dir"; exec tar -chf - .
fi
in=$root/.floor-in
rm -rf "$in"; mkdir -p "$in" "$svc_dir"
tar -xf - -C "$in"
for d in "$in"/*/; do
  s=$(basename "$d")
  if diff -rq "$d" "$svc_dir/$s" >/dev/null 2>&1; then continue; fi
  rm -rf "$svc_dir/$s"
  mv "$d" "$svc_dir/$s"
  (cd "$svc_dir/$s" && docker compose -p "$s" -f docker-compose.yml up -d --remove-orphans)
done
rm -rf "$in"
