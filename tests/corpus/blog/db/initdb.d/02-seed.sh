# The first post of a fresh blog.
echo "Hello world!" > "$datadir/$MYSQL_DATABASE/posts/1"
