#!/bin/sh
# Writes the gateway's basic-auth user files (loki/gateway/nginx.conf reads them) from the
# environment, at every start of the container: docker-compose.scale.yml mounts this script into
# /docker-entrypoint.d/, whose scripts the nginx image's entrypoint runs before nginx starts.
#
#   LOKI_GATEWAY_USER / LOKI_GATEWAY_PASSWORD              push, queries, tail and /config
#   LOKI_GATEWAY_ADMIN_USER / LOKI_GATEWAY_ADMIN_PASSWORD  all of that, and deletion
#
# A value that is missing or unusable stops the container with a line naming it: the gateway
# never starts open. Passwords are kept as salted SHA-1 ({SSHA}, a scheme nginx reads itself),
# made with the busybox tools the nginx alpine image has (it has no openssl and no htpasswd).
# LOKI_GATEWAY_AUTH_DIR (default /tmp/gateway-auth, where nginx.conf looks) moves the files.
set -eu

dir="${LOKI_GATEWAY_AUTH_DIR:-/tmp/gateway-auth}"

fail() {
    echo "$0: $*" >&2
    exit 1
}

user_name() {  # VARIABLE: a user name nginx's user file can hold
    eval "value=\${$1:-}"
    [ -n "$value" ] || fail "$1 is empty: set it in .env (.env.example says how)"
    case "$value" in
        *:* | "#"* | *[[:space:]]*) fail "$1 must not hold ':' or blanks, nor start with '#'" ;;
    esac
}

password() {  # VARIABLE: at least 12 characters on one line
    eval "value=\${$1:-}"
    [ -n "$value" ] || fail "$1 is empty: set it in .env (README's first command generates it)"
    [ "${#value}" -ge 12 ] || fail "$1 is shorter than 12 characters: use e.g. openssl rand -hex 16"
    case "$value" in
        *"
"*) fail "$1 holds a line break" ;;
    esac
}

unhex() {  # HEX: the bytes it spells
    rest=$1
    while [ -n "$rest" ]; do
        byte=${rest%"${rest#??}"}
        rest=${rest#??}
        # shellcheck disable=SC2059  # the format is the byte's octal escape
        printf "\\$(printf '%03o' "0x$byte")"
    done
}

ssha() {  # PASSWORD: {SSHA}base64(sha1(password salt) salt), 8 random bytes of salt
    salt=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
    digest=$({ printf '%s' "$1"; unhex "$salt"; } | sha1sum | cut -c1-40)
    printf '{SSHA}%s' "$({ unhex "$digest"; unhex "$salt"; } | base64 | tr -d '\n')"
}

user_name LOKI_GATEWAY_USER
password LOKI_GATEWAY_PASSWORD
user_name LOKI_GATEWAY_ADMIN_USER
password LOKI_GATEWAY_ADMIN_PASSWORD
[ "$LOKI_GATEWAY_USER" != "$LOKI_GATEWAY_ADMIN_USER" ] ||
    fail "LOKI_GATEWAY_USER and LOKI_GATEWAY_ADMIN_USER are the same user: deletion needs its own"

umask 077
mkdir -p "$dir"
admin="$LOKI_GATEWAY_ADMIN_USER:$(ssha "$LOKI_GATEWAY_ADMIN_PASSWORD")"
printf '%s:%s\n%s\n' "$LOKI_GATEWAY_USER" "$(ssha "$LOKI_GATEWAY_PASSWORD")" "$admin" \
    >"$dir/users.new"
printf '%s\n' "$admin" >"$dir/admins.new"
# nginx's workers read the files: the image runs them as the user nginx
if [ "$(id -u)" = 0 ] && grep -q '^nginx:' /etc/group; then
    chgrp nginx "$dir" "$dir/users.new" "$dir/admins.new"
    chmod 0750 "$dir"
    chmod 0640 "$dir/users.new" "$dir/admins.new"
fi
mv -f "$dir/users.new" "$dir/users"
mv -f "$dir/admins.new" "$dir/admins"
echo "$0: basic auth for $LOKI_GATEWAY_USER (and $LOKI_GATEWAY_ADMIN_USER, who alone may delete)"
