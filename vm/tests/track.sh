# Track the built-in writer for 5 intervals; exit with uffd-dirty's status.
echo "uname -r: $(uname -r)"
/bin/uffd-dirty track --format json --interval 50ms --count 5 -- /bin/uffd-dirty writer --pages 256 --bursts 20
