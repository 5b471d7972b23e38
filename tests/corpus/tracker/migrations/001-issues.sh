# 001: issues, one file each.
mkdir -p "$1/issues"
echo "id title state" > "$1/issues/.columns"
