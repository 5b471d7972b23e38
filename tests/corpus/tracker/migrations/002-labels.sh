# 002: labels.
mkdir -p "$1/labels"
echo bug > "$1/labels/bug"
