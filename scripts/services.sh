#!/usr/bin/env bash
# services.sh makes this machine ready to run, test and benchmark jetcqrs;
# `services.sh tests` also gets what only the tests use (chdb, compose, promtool):
#
#   postgres    reachable, wal_level=logical, max_replication_slots and
#               max_wal_senders >= 32 (restarted once, only when a setting
#               has to change), database of DATABASE_URL present
#   redis       answers PING (started when it is local and down)
#   clickhouse  installed from Debian packages when missing, listening on
#               loopback only, started when down, answers SELECT 1
#   chdb        libchdb.so, a current ClickHouse engine in-process that the
#               tests (-tags chdb) run the ClickHouse SQL on as well: the npm
#               package @chdb/lib-linux-x64-gnu at a pinned version and
#               checksum, kept in /opt/chdb/<version>/ and linked from
#               /usr/local/lib/libchdb.so, where chdb-go looks for it
#   compose     docker-compose (Debian's), which the tests validate
#               docker-compose.yml with
#   promtool    Debian's prometheus package (without its recommends), whose
#               promtool the tests lint the /metrics output with
#
# It is idempotent: when everything is ready it only checks, in about a second.
# Anything it cannot fix (no root, no apt-get, a remote server) is reported with
# the exact fix, and the script exits non-zero.
#
# Environment (defaults are the loopback services the tests use as well):
#   DATABASE_URL    postgres://postgres@127.0.0.1:5432/jetcqrs?sslmode=disable,
#                   or built from PGHOST, PGPORT, PGUSER and PGDATABASE
#   REDIS_URL       redis://127.0.0.1:6379/0
#   CLICKHOUSE_URL  clickhouse://127.0.0.1:9000 (only host and port are used)
#   SERVICES_WAIT   seconds to wait for a service to come up (default 60)
set -euo pipefail

case ${1:-} in
'' | tests) ;;
*)
	echo "usage: $0 [tests]" >&2
	exit 2
	;;
esac

DATABASE_URL=${DATABASE_URL:-postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/${PGDATABASE:-jetcqrs}?sslmode=disable}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
CLICKHOUSE_URL=${CLICKHOUSE_URL:-clickhouse://127.0.0.1:9000}
SERVICES_WAIT=${SERVICES_WAIT:-60}

readonly CH_BIN=/usr/sbin/clickhouse-server
readonly CH_CONFIG=/etc/clickhouse-server/config.xml
readonly CH_OVERRIDE=/etc/clickhouse-server/config.d/jetcqrs.xml
readonly CH_ERRLOG=/var/log/clickhouse-server/clickhouse-server.err.log

# The chDB engine the tests compare with ClickHouse 18.16. A new version needs
# both lines changed: the checksum is that of the package's libchdb.so.
readonly CHDB_VERSION=26.5.3
readonly CHDB_SHA256=4330da79405733f7572f27c1442f46c03a08301f00859dce0368645731b1e1dc
readonly CHDB_DIR=/opt/chdb/$CHDB_VERSION
readonly CHDB_LINK=/usr/local/lib/libchdb.so

# problems collects what could not be fixed, each with its fix; printed at the end.
problems=()

say() { printf '%-10s %s\n' "$1" "$2"; }
problem() { problems+=("$1"); say "$2" "FAILED (see below)"; }
is_root() { [[ ${EUID:-$(id -u)} -eq 0 ]]; }
is_local() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 || $1 == '[::1]' || $1 == /* || -z $1 ]]; }

# url_hostport prints "host port" of scheme://[userinfo@]host[:port][/path][?query].
url_hostport() {
	local authority=${1#*://} default_port=$2 host port
	authority=${authority%%[/?]*}
	authority=${authority##*@}
	if [[ $authority == \[*\]* ]]; then # [v6]:port
		host=${authority%%]*}
		host=${host#[}
		port=${authority#*]}
		port=${port#:}
	elif [[ $authority == *:* ]]; then
		host=${authority%:*}
		port=${authority##*:}
	else
		host=$authority
		port=
	fi
	printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$default_port}"
}

# url_dbname prints the path of a URL without its leading slash.
url_dbname() {
	local rest=${1#*://}
	rest=${rest%%\?*}
	[[ $rest == */* ]] && printf '%s\n' "${rest#*/}" || printf '\n'
}

# url_with_dbname replaces the database (path) of a URL, keeping its query.
url_with_dbname() {
	local url=$1 db=$2 base query=
	if [[ $url == *\?* ]]; then
		query="?${url#*\?}"
	fi
	base=${url%%\?*}
	local scheme=${base%%://*} rest=${base#*://}
	printf '%s://%s/%s%s\n' "$scheme" "${rest%%/*}" "$db" "$query"
}

# wait_for runs "$@" every 0.2 s until it succeeds or SERVICES_WAIT seconds pass.
wait_for() {
	local deadline=$((SECONDS + SERVICES_WAIT))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# ensure_command installs packages ($2...) when command $1 is missing. The
# package lists are refreshed only when installing from them fails.
ensure_command() {
	local cmd=$1
	shift
	command -v "$cmd" >/dev/null 2>&1 && return 0
	if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
		problems+=("$cmd is not installed. As root on Debian: apt-get update && apt-get install -y $*")
		return 1
	fi
	say install "$* (apt-get)"
	local log
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q "$@" >"$log" 2>&1; then
		if ! { apt-get update -q && apt-get install -y -q "$@"; } >"$log" 2>&1; then
			tail -n 20 "$log" >&2
			rm -f "$log"
			problems+=("apt-get install $* failed (output above). Fix apt, then: apt-get install -y $*")
			return 1
		fi
	fi
	rm -f "$log"
	command -v "$cmd" >/dev/null 2>&1
}

ensure_postgres() {
	ensure_command psql postgresql-client || {
		say postgres "FAILED (see below)"
		return
	}
	local host port dbname admin_url
	read -r host port < <(url_hostport "$DATABASE_URL" 5432)
	dbname=$(url_dbname "$DATABASE_URL")
	dbname=${dbname:-jetcqrs}
	admin_url=$(url_with_dbname "$DATABASE_URL" postgres)
	export PGCONNECT_TIMEOUT=3

	local cluster=
	if is_local "$host" && command -v pg_lsclusters >/dev/null 2>&1; then
		cluster=$(pg_lsclusters --no-header 2>/dev/null | awk -v p="$port" '$3 == p { print $1 " " $2; exit }')
	fi
	local ctl="pg_ctlcluster --skip-systemctl-redirect <version> <cluster>"
	if [[ -n $cluster ]]; then
		ctl="pg_ctlcluster --skip-systemctl-redirect $cluster"
	fi

	if ! psql -X "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1; then
		if [[ -z $cluster ]] || ! is_root; then
			problem "PostgreSQL does not answer at $host:$port. Start it (on Debian, as root: $ctl start) or point DATABASE_URL at a running server." postgres
			return
		fi
		say postgres "starting cluster $cluster"
		pg_ctlcluster --skip-systemctl-redirect "${cluster% *}" "${cluster#* }" start || true
		if ! wait_for psql -X "$admin_url" -Atqc 'SELECT 1'; then
			problem "PostgreSQL did not accept connections at $host:$port within ${SERVICES_WAIT}s; see /var/log/postgresql/." postgres
			return
		fi
	fi

	local settings wal slots senders super has_db
	settings=$(psql -X "$admin_url" -v ON_ERROR_STOP=1 -v db="$dbname" -AtqF '|' <<-'SQL'
		SELECT current_setting('wal_level'),
		       current_setting('max_replication_slots'),
		       current_setting('max_wal_senders'),
		       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
		       EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db');
	SQL
	)
	IFS='|' read -r wal slots senders super has_db <<<"$settings"

	if [[ $wal != logical || $slots -lt 32 || $senders -lt 32 ]]; then
		local alter=()
		[[ $wal == logical ]] || alter+=("ALTER SYSTEM SET wal_level = logical;")
		((slots >= 32)) || alter+=("ALTER SYSTEM SET max_replication_slots = 32;")
		((senders >= 32)) || alter+=("ALTER SYSTEM SET max_wal_senders = 32;")
		if [[ $super != t || -z $cluster ]] || ! is_root; then
			problem "PostgreSQL at $host:$port has wal_level=$wal max_replication_slots=$slots max_wal_senders=$senders; the relay needs logical decoding. As a superuser run: ${alter[*]} then restart it (on Debian, as root: $ctl restart)." postgres
			return
		fi
		say postgres "wal_level=$wal slots=$slots senders=$senders: ALTER SYSTEM and restart $cluster"
		printf '%s\n' "${alter[@]}" | psql -X "$admin_url" -v ON_ERROR_STOP=1 -q
		pg_ctlcluster --skip-systemctl-redirect "${cluster% *}" "${cluster#* }" restart
		if ! wait_for psql -X "$admin_url" -Atqc 'SELECT 1'; then
			problem "PostgreSQL did not come back at $host:$port within ${SERVICES_WAIT}s after the restart; see /var/log/postgresql/." postgres
			return
		fi
		wal=$(psql -X "$admin_url" -Atqc "SHOW wal_level")
		if [[ $wal != logical ]]; then
			problem "PostgreSQL at $host:$port still has wal_level=$wal after ALTER SYSTEM and a restart: a command-line -c wal_level or an include overrides postgresql.auto.conf; remove it and restart (on Debian, as root: $ctl restart)." postgres
			return
		fi
	fi

	if [[ $has_db != t ]]; then
		psql -X "$admin_url" -v ON_ERROR_STOP=1 -v db="$dbname" -q <<-'SQL'
			SELECT format('CREATE DATABASE %I', :'db')
			WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
		SQL
		say postgres "created database $dbname"
	fi
	say postgres "ok: $host:$port wal_level=logical, database $dbname"
}

redis_pong() {
	[[ $(timeout 5 redis-cli -u "$REDIS_URL" --no-auth-warning ping 2>/dev/null) == PONG ]]
}

ensure_redis() {
	local host port
	read -r host port < <(url_hostport "$REDIS_URL" 6379)
	ensure_command redis-cli redis-tools || {
		say redis "FAILED (see below)"
		return
	}
	if ! redis_pong; then
		local start=(redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log)
		if ! is_local "$host" || ! is_root; then
			problem "Redis does not answer at $host:$port. Start it (as root): $(printf '%q ' "${start[@]}")" redis
			return
		fi
		ensure_command redis-server redis-server || {
			say redis "FAILED (see below)"
			return
		}
		say redis "starting redis-server on $host:$port"
		mkdir -p /var/lib/redis /var/log/redis
		"${start[@]}"
		if ! wait_for redis_pong; then
			problem "Redis did not answer at $host:$port within ${SERVICES_WAIT}s; see /var/log/redis/ci.log." redis
			return
		fi
	fi
	say redis "ok: $host:$port"
}

# The Debian config.xml of ClickHouse 18.16 leaves listen_host unset, and the
# server then binds both ::1 and 127.0.0.1: it refuses to start where IPv6 is
# disabled, and it is not explicit about staying off the network. This override
# pins the IPv4 loopback (what the tests dial), and nothing else, since the
# default user has no password.
ch_override() {
	cat <<-'XML'
		<?xml version="1.0"?>
		<!-- Written by scripts/services.sh (jetcqrs): listen on the IPv4 loopback only. -->
		<yandex>
		    <listen_host>127.0.0.1</listen_host>
		</yandex>
	XML
}

ch_query() {
	timeout 10 clickhouse-client --host "$1" --port "$2" --query "$3"
}

ch_start() {
	install -d -o clickhouse -g clickhouse /var/lib/clickhouse /var/log/clickhouse-server
	start-stop-daemon --start --quiet --oknodo --background \
		--user clickhouse --chuid clickhouse:clickhouse \
		--exec "$CH_BIN" -- --config-file="$CH_CONFIG"
}

ch_stop() {
	start-stop-daemon --stop --quiet --oknodo --retry=TERM/30/KILL/5 --user clickhouse --exec "$CH_BIN"
}

ensure_clickhouse() {
	local host port
	read -r host port < <(url_hostport "$CLICKHOUSE_URL" 9000)
	# Only the stock local server (loopback, port 9000) is installed and started
	# here; any other address is checked, not managed.
	if ! is_local "$host" || [[ $port != 9000 ]]; then
		ensure_command clickhouse-client clickhouse-client || {
			say clickhouse "FAILED (see below)"
			return
		}
		if ch_query "$host" "$port" 'SELECT 1' >/dev/null 2>&1; then
			say clickhouse "ok: $host:$port (not managed here)"
		else
			problem "ClickHouse does not answer at $host:$port; start it there, or unset CLICKHOUSE_URL to use the local one on 127.0.0.1:9000." clickhouse
		fi
		return
	fi
	host=127.0.0.1

	if ! [[ -x $CH_BIN ]]; then
		ensure_command clickhouse-server clickhouse-server clickhouse-client || {
			say clickhouse "FAILED (see below)"
			return
		}
	fi
	ensure_command clickhouse-client clickhouse-client || {
		say clickhouse "FAILED (see below)"
		return
	}

	local changed=false
	if [[ $(cat "$CH_OVERRIDE" 2>/dev/null) != "$(ch_override)" ]]; then
		if ! is_root; then
			problem "$CH_OVERRIDE is missing or differs; run this script as root to write it." clickhouse
			return
		fi
		mkdir -p "${CH_OVERRIDE%/*}"
		ch_override >"$CH_OVERRIDE"
		changed=true
		say clickhouse "wrote $CH_OVERRIDE"
	fi

	if [[ $changed == false ]] && ch_query "$host" "$port" 'SELECT 1' >/dev/null 2>&1; then
		say clickhouse "ok: $host:$port"
		return
	fi
	if ! is_root; then
		problem "ClickHouse does not answer at $host:$port. As root: start-stop-daemon --start --background --chuid clickhouse:clickhouse --exec $CH_BIN -- --config-file=$CH_CONFIG" clickhouse
		return
	fi
	if [[ $changed == true ]]; then
		ch_stop
	fi
	say clickhouse "starting clickhouse-server (user clickhouse, logs in /var/log/clickhouse-server/)"
	ch_start
	if ! wait_for ch_query "$host" "$port" 'SELECT 1'; then
		tail -n 20 "$CH_ERRLOG" >&2 2>/dev/null || true
		problem "ClickHouse did not answer at $host:$port within ${SERVICES_WAIT}s; see $CH_ERRLOG (tail above)." clickhouse
		return
	fi
	say clickhouse "ok: $host:$port version $(ch_query "$host" "$port" 'SELECT version()')"
}

# ensure_chdb installs libchdb.so once per version: the library lands in
# CHDB_DIR only after its checksum matched (a rename, so an interrupted run
# leaves nothing half-written there), and CHDB_LINK is switched to it with a
# rename as well. Later runs only check the link.
ensure_chdb() {
	local lib=$CHDB_DIR/libchdb.so
	if [[ -f $lib && $(readlink "$CHDB_LINK" 2>/dev/null) == "$lib" ]]; then
		say chdb "ok: $lib ($CHDB_VERSION)"
		return
	fi
	if [[ $(uname -s)-$(uname -m) != Linux-x86_64 ]]; then
		problem "chDB's npm package @chdb/lib-linux-x64-gnu is for x86-64 Linux, not $(uname -s)-$(uname -m): run the tests without chDB (make test TESTTAGS=) or install a libchdb.so of chDB $CHDB_VERSION for this machine at $CHDB_LINK." chdb
		return
	fi
	if ! is_root; then
		problem "libchdb.so $CHDB_VERSION is not installed; run this script as root to install it to $CHDB_DIR." chdb
		return
	fi
	if [[ ! -f $lib ]]; then
		ensure_command npm npm || {
			say chdb "FAILED (see below)"
			return
		}
		say chdb "downloading @chdb/lib-linux-x64-gnu@$CHDB_VERSION (npm, about 170 MB)"
		local tmp
		tmp=$(mktemp -d)
		if ! (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "@chdb/lib-linux-x64-gnu@$CHDB_VERSION" >/dev/null) ||
			! tar -xzf "$tmp/chdb-lib-linux-x64-gnu-$CHDB_VERSION.tgz" -C "$tmp" package/libchdb.so; then
			rm -rf "$tmp"
			problem "npm pack @chdb/lib-linux-x64-gnu@$CHDB_VERSION failed (output above); check that the npm registry is reachable." chdb
			return
		fi
		if [[ $(sha256sum "$tmp/package/libchdb.so" | cut -d' ' -f1) != "$CHDB_SHA256" ]]; then
			rm -rf "$tmp"
			problem "libchdb.so of @chdb/lib-linux-x64-gnu@$CHDB_VERSION does not have the sha256 $CHDB_SHA256 this script pins." chdb
			return
		fi
		mkdir -p "$CHDB_DIR"
		install -m 0755 "$tmp/package/libchdb.so" "$lib.partial"
		mv -f "$lib.partial" "$lib"
		rm -rf "$tmp"
	fi
	mkdir -p "${CHDB_LINK%/*}"
	ln -sfn "$lib" "$CHDB_LINK.partial"
	mv -fT "$CHDB_LINK.partial" "$CHDB_LINK"
	say chdb "ok: installed $lib ($CHDB_VERSION), linked from $CHDB_LINK"
}

ensure_compose() {
	ensure_command docker-compose docker-compose || {
		say compose "FAILED (see below)"
		return
	}
	say compose "ok: $(docker-compose version --short 2>/dev/null)"
}

ensure_promtool() {
	ensure_command promtool --no-install-recommends prometheus || {
		say promtool "FAILED (see below)"
		return
	}
	say promtool "ok: $(promtool --version 2>&1 | head -n 1)"
}

ensure_postgres
ensure_redis
ensure_clickhouse
if [[ ${1:-} == tests ]]; then
	ensure_chdb
	ensure_compose
	ensure_promtool
fi

if ((${#problems[@]} > 0)); then
	printf '\nservices.sh: not ready:\n' >&2
	printf '  - %s\n' "${problems[@]}" >&2
	exit 1
fi
