# Creates the schema of an empty database.
mkdir -p "$datadir/$MYSQL_DATABASE/posts"
echo "CREATE TABLE posts (id INT, title TEXT);" > "$datadir/$MYSQL_DATABASE/schema.sql"
echo "$MYSQL_USER" > "$datadir/$MYSQL_DATABASE/owner"
