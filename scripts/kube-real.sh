#!/usr/bin/env bash
# kube-real.sh — a real (unmodified upstream) Kubernetes control plane for
# pushroll's integration tests: etcd + kube-apiserver + kube-controller-manager
# v1.20.2, all on loopback, no nodes, no containers.
#
# Why 1.20.2: it is the newest kube-apiserver whose full source Debian ships
# (source package `kubernetes` in bookworm); there is no other way to get one
# here (no internet besides package registries). It has everything pushroll
# talks to: apps/v1, core Events, coordination.k8s.io/v1 Leases, watch
# bookmarks, server-side apply, RBAC.
#
# Subcommands (run `kube-real.sh help`):
#   install-deps                 apt-get install what is needed (idempotent)
#   build                        fetch the Debian source, build the binaries
#                                into $PUSHROLL_KUBE_CACHE (reused if present)
#   start [STATE_DIR]            start etcd, apiserver, controller-manager;
#                                prints the env lines on stdout
#   stop [STATE_DIR] [--purge]   stop them (by PID) and delete the data dirs
#   status [STATE_DIR]           show what runs, readiness, memory
#   restart [STATE_DIR]          kill kube-apiserver, move etcd's revision on,
#                                start it again: every watch re-lists (410)
#   run [STATE_DIR] -- CMD...    start, run CMD with the env exported, always
#                                stop (alias run-tests); without STATE_DIR a
#                                temp dir is used, removed if CMD succeeded
#
# Typical CI use:
#   scripts/kube-real.sh install-deps      # root; quiet when all present
#   scripts/kube-real.sh build             # ~4-6 min cold on 2 cores, then cached
#   scripts/kube-real.sh run -- cargo test --test real_apiserver
# or by hand:
#   S=$(mktemp -d); scripts/kube-real.sh start "$S"; set -a; . "$S/env"; set +a
#   ...; scripts/kube-real.sh stop "$S"
# Pass STATE_DIR explicitly when several clusters may run at once; without it
# stop/status use the one most recently started.
#
# env file keys: PUSHROLL_REAL_APISERVER (https://127.0.0.1:PORT),
#   PUSHROLL_REAL_KUBECONFIG (admin), PUSHROLL_REAL_KUBECONFIG_SERVE,
#   PUSHROLL_REAL_KUBECONFIG_INDEXER, PUSHROLL_REAL_CA_FILE,
#   PUSHROLL_REAL_STATE_DIR, PUSHROLL_REAL_KUBE_VERSION
#
# Files in STATE_DIR after `start`:
#   env                          KEY=VALUE lines (PUSHROLL_REAL_*), sourceable
#   kubeconfig                   admin (group system:masters)
#   kubeconfig-pushroll          user system:serviceaccount:pushroll:pushroll
#   kubeconfig-pushroll-indexer  user system:serviceaccount:pushroll:pushroll-indexer
#   pki/ca.crt                   the CA that signed the apiserver's certificate
#   *.pid, logs/*.log
#
# The two test identities are static-token users with exactly the user name
# and groups the service-account authenticator would give
# (system:serviceaccounts, system:serviceaccounts:pushroll), so a RoleBinding
# to `kind: ServiceAccount, name: pushroll, namespace: pushroll` applies to
# them. Nothing is granted to them by this script. The namespace `pushroll`
# and the two ServiceAccount objects are created at start (set
# PUSHROLL_KUBE_BOOTSTRAP=0 to get a bare cluster).
#
# Environment knobs:
#   PUSHROLL_KUBE_CACHE        build cache (default /var/cache/pushroll/kube-1.20.2)
#   PUSHROLL_KUBE_KEEP_BUILD=1 keep the source tree and Go build cache after build
#   PUSHROLL_KUBE_START_TIMEOUT seconds to wait for readiness (default 120)
#   PUSHROLL_KUBE_BOOTSTRAP=0  do not create namespace/ServiceAccounts `pushroll`
#   PUSHROLL_KUBE_APISERVER_ARGS, PUSHROLL_KUBE_CONTROLLER_MANAGER_ARGS
#                              extra flags (word-split), e.g. feature gates

set -euo pipefail

readonly KUBE_VERSION=1.20.2
readonly KUBE_MAJOR=1
readonly KUBE_MINOR=20
readonly DEBIAN_SOURCE_PACKAGE=kubernetes
readonly SCRIPT_NAME=${0##*/}

CACHE=${PUSHROLL_KUBE_CACHE:-/var/cache/pushroll/kube-${KUBE_VERSION}}
BIN_DIR=$CACHE/bin
START_TIMEOUT=${PUSHROLL_KUBE_START_TIMEOUT:-120}
# Where `start` remembers the last state dir, so `stop`/`status` need no argument.
CURRENT_FILE=${PUSHROLL_KUBE_CURRENT_FILE:-${TMPDIR:-/tmp}/pushroll-kube-real.current}

# Components in start order; stopped in reverse.
readonly COMPONENTS=(etcd kube-apiserver kube-controller-manager)

# Test identities: name -> user name. Groups are the service-account ones.
readonly SA_NAMESPACE=pushroll
readonly SA_NAMES=(pushroll pushroll-indexer)

log() { printf '%s [kube-real] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s; }

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
}

# ---------------------------------------------------------------- install-deps

readonly DEB_PACKAGES=(golang-go rsync etcd-server openssl golang-github-modern-go-reflect2-dev dpkg-dev curl make ca-certificates)

pkg_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

cmd_install_deps() {
	[ "$(id -u)" = 0 ] || die "install-deps needs root (apt-get install)"
	local missing=() p
	for p in "${DEB_PACKAGES[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "install-deps: all present (${DEB_PACKAGES[*]})"
		return 0
	fi
	log "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Keep package maintainer scripts from starting a system-wide etcd: we
	# only ever run our own, on free loopback ports. policy-rc.d is honoured
	# by invoke-rc.d/deb-systemd-invoke; only created if none exists.
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
	fi
	local rc=0
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || rc=$?
	if [ $rc -ne 0 ]; then
		log "install-deps: apt-get install failed; running apt-get update and retrying"
		apt-get update -qq >/dev/null || true
		rc=0
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?
	fi
	[ $made_policy = 1 ] && rm -f "$policy"
	[ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed"
	# A packaged etcd service, if one was started anyway, is not ours to keep.
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
		log "install-deps: note: a system etcd service is running (not used by this script)"
	fi
	log "install-deps: done"
}

need_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run: $0 install-deps"
	done
}

# ----------------------------------------------------------------------- build

# Bump when the way the binaries are built changes: cached ones built by an
# older recipe are then rebuilt.
readonly BUILD_RECIPE="kube-real build recipe 2 (v$KUBE_VERSION, reflect2 1.0.2, both version pkgs stamped)"

binaries_ok() {
	local b out
	[ "$(cat "$BIN_DIR/BUILD-RECIPE" 2>/dev/null || true)" = "$BUILD_RECIPE" ] || return 1
	for b in kube-apiserver kube-controller-manager; do
		[ -x "$BIN_DIR/$b" ] || return 1
		out=$("$BIN_DIR/$b" --version 2>/dev/null) || return 1
		[ "$out" = "Kubernetes v$KUBE_VERSION" ] || return 1
	done
}

os_codename() {
	# shellcheck disable=SC1091
	(. /etc/os-release && echo "${VERSION_CODENAME:-}")
}

# Write deb-src lines derived from the machine's own apt configuration: every
# enabled `deb` entry for this release's codename (e.g. bookworm,
# bookworm-updates, bookworm-security), turned into `deb-src`. No host name
# is hard-coded here.
derive_deb_src() {
	local codename
	codename=$(os_codename)
	[ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release"
	local files=() f
	[ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
	for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && files+=("$f")
	done
	[ ${#files[@]} -gt 0 ] || die "no apt sources found under /etc/apt"
	awk -v codename="$codename" '
		function suite_ok(s) { return s == codename || s == codename "-updates" || s == codename "-security" }
		function emit(uris, suites, comps, signed,   nu, u, ns, s, i, j, opt) {
			if (comps !~ /(^|[ \t])main([ \t]|$)/) return
			opt = (signed != "") ? "[signed-by=" signed "] " : ""
			nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
			for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
				if (u[i] != "" && suite_ok(s[j])) print "deb-src " opt u[i] " " s[j] " main"
		}
		function flush() {
			if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") emit(uris, suites, comps, signed)
			types = uris = suites = comps = signed = enabled = ""
		}
		FILENAME ~ /\.sources$/ {
			if (FNR == 1) flush()
			line = $0; sub(/#.*/, "", line)
			if (line ~ /^[ \t]*$/) { if ($0 !~ /^[ \t]*#/) flush(); next }
			key = tolower(line); sub(/:.*/, "", key); gsub(/[ \t]/, "", key)
			val = line; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
			if (key == "types") types = val
			else if (key == "uris") uris = val
			else if (key == "suites") suites = val
			else if (key == "components") comps = val
			else if (key == "signed-by") signed = val
			else if (key == "enabled") enabled = tolower(val)
			next
		}
		FILENAME ~ /\.list$/ {
			if (FNR == 1) flush()
			line = $0; sub(/#.*/, "", line)
			if (line !~ /^[ \t]*deb[ \t]/) next
			sub(/^[ \t]*deb[ \t]+/, "", line)
			signed = ""
			if (line ~ /^\[/) {
				opts = line; sub(/\].*/, "", opts); sub(/^\[/, "", opts)
				sub(/^\[[^]]*\][ \t]*/, "", line)
				if (match(opts, /signed-by=[^ \t]+/)) signed = substr(opts, RSTART + 10, RLENGTH - 10)
			}
			n = split(line, w, /[ \t]+/)
			c = ""; for (i = 3; i <= n; i++) c = c " " w[i]
			emit(w[1], w[2], c, signed)
			next
		}
		END { flush() }
	' "${files[@]}" | sort -u
}

fetch_source() {
	local dest=$1 work=$CACHE/apt
	rm -rf "$work"
	mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/src"
	derive_deb_src >"$work/sources.list"
	[ -s "$work/sources.list" ] || die "found no Debian '$(os_codename)' entries in /etc/apt to derive a deb-src line from"
	log "build: deb-src entries (from the machine's apt config):"
	sed 's/^/    /' "$work/sources.list" >&2
	# A private apt configuration: the system's sources and lists stay untouched.
	local aptopts=(
		-o "Dir::Etc::SourceList=$work/sources.list"
		-o "Dir::Etc::SourceParts=/dev/null"
		-o "Dir::State::Lists=$work/lists"
		-o "Dir::Cache::Archives=$work/archives"
		-o "APT::Get::List-Cleanup=0"
		-o "APT::Sandbox::User=root"
	)
	apt-get "${aptopts[@]}" update -qq >"$work/update.log" 2>&1 ||
		{ cat "$work/update.log" >&2; die "private apt-get update failed"; }
	log "build: apt-get source $DEBIAN_SOURCE_PACKAGE"
	(cd "$work/src" && apt-get "${aptopts[@]}" source -qq "$DEBIAN_SOURCE_PACKAGE") >"$work/source.log" 2>&1 ||
		{ tail -n 40 "$work/source.log" >&2; die "apt-get source $DEBIAN_SOURCE_PACKAGE failed"; }
	local tree
	tree=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name "${DEBIAN_SOURCE_PACKAGE}-*" | head -n 1)
	[ -n "$tree" ] || die "apt-get source produced no source tree (see $work/source.log)"
	case "$tree" in
	*"$KUBE_VERSION"*) ;;
	*) die "source tree $tree is not Kubernetes $KUBE_VERSION" ;;
	esac
	local d
	for d in vendor cmd/kube-apiserver cmd/kube-controller-manager; do
		[ -d "$tree/$d" ] || die "$tree lacks $d/"
	done
	mkdir -p "$(dirname "$dest")"
	rm -rf "$dest"
	mv "$tree" "$dest"
	rm -rf "$work/src" "$work/archives"
}

cmd_build() {
	local t0 t1
	t0=$(now)
	if binaries_ok; then
		log "build: cached binaries in $BIN_DIR are Kubernetes v$KUBE_VERSION; nothing to do"
		return 0
	fi
	need_cmd go rsync make apt-get dpkg-source
	local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
	[ -f "$reflect2/reflect2.go" ] || die "$reflect2 missing; run: $0 install-deps"
	mkdir -p "$CACHE"
	# Go in GOPATH mode, everything (sources, build cache) inside the cache dir.
	export GOPATH=$CACHE/gopath
	export GOCACHE=$CACHE/go-build
	export GO111MODULE=off GOPROXY=off GOFLAGS='' CGO_ENABLED=0 GOTOOLCHAIN=local
	export PATH=/usr/lib/go/bin:$PATH
	local src=$GOPATH/src/k8s.io/kubernetes
	log "build: $(go version) into $CACHE"

	if [ ! -f "$src/.pushroll-prepared" ]; then
		fetch_source "$src"
		t1=$(now)
		log "build: source fetched in $((t1 - t0))s"
		# reflect2 1.0.1 (vendored) crashes under Go >= 1.18 (pretty/YAML
		# output, e.g. `kubectl get -o yaml` or `?pretty`); use Debian's 1.0.2.
		rsync -a --delete --exclude '*_test.go' --exclude '.git*' "$reflect2/" "$src/vendor/github.com/modern-go/reflect2/"
		touch "$src/.pushroll-prepared"
	else
		log "build: reusing prepared source tree $src"
	fi

	cd "$src"
	if [ ! -s pkg/generated/openapi/zz_generated.openapi.go ]; then
		t1=$(now)
		log "build: make gen_openapi (log: $CACHE/gen_openapi.log)"
		make gen_openapi >"$CACHE/gen_openapi.log" 2>&1 ||
			{ tail -n 40 "$CACHE/gen_openapi.log" >&2; die "make gen_openapi failed"; }
		[ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "make gen_openapi did not produce pkg/generated/openapi/zz_generated.openapi.go"
		log "build: gen_openapi took $(($(now) - t1))s"
	fi

	# Stamp both version packages: component-base/version feeds `--version`,
	# client-go/pkg/version feeds the apiserver's /version endpoint (what
	# clients such as kubectl and kube-rs read). gitCommit is already set in
	# the release tarball.
	local pkg ldflags="-s -w" build_date
	build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=$KUBE_MAJOR -X $pkg.gitMinor=$KUBE_MINOR"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
	done
	mkdir -p "$BIN_DIR"
	local b
	for b in kube-apiserver kube-controller-manager; do
		t1=$(now)
		log "build: go build ./cmd/$b (log: $CACHE/build-$b.log)"
		rm -f "$BIN_DIR/$b.tmp"
		go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$b.tmp" "./cmd/$b" >"$CACHE/build-$b.log" 2>&1 ||
			{ tail -n 40 "$CACHE/build-$b.log" >&2; die "go build ./cmd/$b failed"; }
		mv -f "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
		log "build: $b built in $(($(now) - t1))s ($(du -h "$BIN_DIR/$b" | cut -f1))"
	done
	cd /
	echo "$BUILD_RECIPE" >"$BIN_DIR/BUILD-RECIPE"
	binaries_ok || die "built binaries do not report 'Kubernetes v$KUBE_VERSION'"
	if [ "${PUSHROLL_KUBE_KEEP_BUILD:-0}" != 1 ]; then
		log "build: removing source tree and Go build cache (PUSHROLL_KUBE_KEEP_BUILD=1 keeps them)"
		chmod -R u+w "$GOPATH" "$GOCACHE" 2>/dev/null || true
		rm -rf "$GOPATH" "$GOCACHE" "$CACHE/apt"
	fi
	log "build: done in $(($(now) - t0))s; cache $CACHE uses $(du -sh "$CACHE" | cut -f1)"
}

# ------------------------------------------------------------------ processes

# PID of a component if its pid file exists and the process is alive and is
# ours (its command line mentions the state dir). Prints nothing otherwise.
component_pid() {
	local state=$1 name=$2 pid
	[ -f "$state/$name.pid" ] || return 0
	pid=$(cat "$state/$name.pid" 2>/dev/null || true)
	[[ "$pid" =~ ^[0-9]+$ ]] || return 0
	[ -r "/proc/$pid/cmdline" ] || return 0
	# zombies are not running
	[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$state/" || return 0
	echo "$pid"
}

stop_component() {
	local state=$1 name=$2 pid i
	pid=$(component_pid "$state" "$name")
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 100); do
			[ -n "$(component_pid "$state" "$name")" ] || break
			sleep 0.1
		done
		if [ -n "$(component_pid "$state" "$name")" ]; then
			log "stop: $name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			for i in $(seq 1 50); do
				[ -n "$(component_pid "$state" "$name")" ] || break
				sleep 0.1
			done
		fi
		if [ -n "$(component_pid "$state" "$name")" ]; then
			log "stop: WARNING: $name (pid $pid) is still running"
			return 1
		fi
		log "stop: $name (pid $pid) stopped"
	fi
	rm -f "$state/$name.pid"
}

# Print the last lines of each component's log (used on failure).
dump_logs() {
	local state=$1 name
	for name in "${COMPONENTS[@]}"; do
		[ -s "$state/logs/$name.log" ] || continue
		printf '\n----- %s (last 40 lines of %s) -----\n' "$name" "$state/logs/$name.log" >&2
		tail -n 40 "$state/logs/$name.log" >&2
	done
	printf -- '-----\n' >&2
}

# N free TCP ports on 127.0.0.1, distinct, all bound at once then released.
free_ports() {
	local n=$1
	if command -v python3 >/dev/null 2>&1; then
		python3 - "$n" <<-'EOF'
			import socket, sys
			socks = []
			for _ in range(int(sys.argv[1])):
			    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
			    s.bind(("127.0.0.1", 0))
			    socks.append(s)
			print(" ".join(str(s.getsockname()[1]) for s in socks))
		EOF
		return
	fi
	# Fallback without python: random high ports that nothing listens on.
	local ports=() p
	while [ ${#ports[@]} -lt "$n" ]; do
		p=$((20000 + RANDOM % 30000))
		[[ " ${ports[*]} " == *" $p "* ]] && continue
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
		ports+=("$p")
	done
	echo "${ports[*]}"
}

random_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Spawn a component detached (own session), output to its log, PID to a file.
spawn() {
	local state=$1 name=$2
	shift 2
	setsid "$@" </dev/null >>"$state/logs/$name.log" 2>&1 &
	echo $! >"$state/$name.pid"
}

# Wait until CHECK succeeds; fail fast if the component dies.
wait_for() {
	local state=$1 name=$2 what=$3 deadline=$4
	shift 4
	until "$@" >/dev/null 2>&1; do
		[ -n "$(component_pid "$state" "$name")" ] || { log "start: $name exited while waiting for $what"; return 1; }
		[ "$(now)" -lt "$deadline" ] || { log "start: timed out waiting for $what"; return 1; }
		sleep 0.25
	done
}

# --------------------------------------------------------------------- start

write_kubeconfig() {
	local file=$1 server=$2 ca_file=$3 user=$4 token=$5 ca_data
	ca_data=$(base64 -w0 <"$ca_file")
	umask 077
	cat >"$file" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: pushroll-real
		  cluster:
		    server: $server
		    certificate-authority-data: $ca_data
		users:
		- name: $user
		  user:
		    token: $token
		contexts:
		- name: pushroll-real
		  context:
		    cluster: pushroll-real
		    user: $user
		    namespace: default
		current-context: pushroll-real
	EOF
}

make_pki() {
	local pki=$1
	mkdir -p "$pki"
	(
		umask 077
		cd "$pki"
		openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 30 \
			-keyout ca.key -out ca.crt -subj "/CN=pushroll-real-ca" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" \
			-addext "subjectKeyIdentifier=hash" 2>/dev/null
		openssl req -new -newkey rsa:2048 -nodes -sha256 \
			-keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
		cat >apiserver.ext <<-'EOF'
			basicConstraints=critical,CA:FALSE
			keyUsage=critical,digitalSignature,keyEncipherment
			extendedKeyUsage=serverAuth
			subjectKeyIdentifier=hash
			authorityKeyIdentifier=keyid
			subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1
		EOF
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-sha256 -days 30 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
		# Service-account token signing key pair.
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
		openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
		rm -f apiserver.csr ca.srl
		chmod 644 ca.crt apiserver.crt sa.pub
	)
}

# curl against the apiserver as admin; args: METHOD PATH [JSON-BODY]
api() {
	local state=$1 method=$2 path=$3 body=${4:-}
	# shellcheck disable=SC1091
	local server token
	server=$(cat "$state/apiserver.url")
	token=$(cat "$state/admin.token")
	if [ -n "$body" ]; then
		curl -fsS --max-time 10 --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $token" \
			-H 'Content-Type: application/json' -X "$method" --data "$body" "$server$path"
	else
		curl -fsS --max-time 10 --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $token" \
			-X "$method" "$server$path"
	fi
}

# create (POST) if absent; 409 AlreadyExists is fine
api_ensure() {
	local state=$1 get_path=$2 post_path=$3 body=$4
	api "$state" GET "$get_path" >/dev/null 2>&1 && return 0
	api "$state" POST "$post_path" "$body" >/dev/null 2>&1 || api "$state" GET "$get_path" >/dev/null
}

resolve_state_dir() {
	local arg=${1:-}
	if [ -n "$arg" ]; then
		echo "$arg"
	elif [ -n "${PUSHROLL_KUBE_STATE:-}" ]; then
		echo "$PUSHROLL_KUBE_STATE"
	elif [ -f "$CURRENT_FILE" ]; then
		cat "$CURRENT_FILE"
	fi
}

any_running() {
	local state=$1 name
	for name in "${COMPONENTS[@]}"; do
		[ -n "$(component_pid "$state" "$name")" ] && return 0
	done
	return 1
}

all_running() {
	local state=$1 name
	for name in "${COMPONENTS[@]}"; do
		[ -n "$(component_pid "$state" "$name")" ] || return 1
	done
}

readyz() {
	local state=$1
	[ "$(api "$state" GET /readyz 2>/dev/null)" = ok ]
}

cmd_start() {
	local state=${1:-}
	if [ -z "$state" ]; then
		state=$(mktemp -d "${TMPDIR:-/tmp}/pushroll-kube.XXXXXX")
	fi
	mkdir -p "$state"
	state=$(cd "$state" && pwd -P)
	[[ "$state" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "state dir '$state' must not contain spaces or shell metacharacters"

	if all_running "$state" && [ -f "$state/env" ] && readyz "$state"; then
		log "start: already running in $state"
		echo "$state" >"$CURRENT_FILE"
		cat "$state/env"
		return 0
	fi
	if any_running "$state"; then
		log "start: $state has a partly running control plane; stopping it first"
		cmd_stop "$state"
	fi

	need_cmd etcd openssl curl setsid base64 od
	binaries_ok || die "no usable kube binaries in $BIN_DIR; run: $0 build"

	local attempt rc t0
	t0=$(now)
	for attempt in 1 2 3; do
		# Each attempt runs in a subshell with errexit on; its EXIT trap stops
		# whatever it started if it fails, so a failed start leaves nothing.
		set +e
		(
			set -e
			trap 'exit 130' INT
			trap 'exit 143' TERM
			# shellcheck disable=SC2064
			trap "rc=\$?; [ \$rc -eq 0 ] || cmd_stop '$state' || true" EXIT
			start_attempt "$state" "$t0"
		)
		rc=$?
		set -e
		[ $rc -ne 0 ] || break
		if [ $rc -lt 128 ] && [ $attempt -lt 3 ] && grep -qs 'address already in use' "$state"/logs/*.log; then
			log "start: a chosen port was taken meanwhile; retrying with new ports"
			continue
		fi
		log "start: FAILED (exit $rc); component logs follow"
		dump_logs "$state"
		die "start failed; everything it started was stopped (state dir $state)"
	done
	log "start: ready in $(($(now) - t0))s — apiserver $(cat "$state/apiserver.url"); env: $state/env"
	cat "$state/env"
}

# The kube-apiserver of STATE_DIR, on the port and etcd chosen at start
# (`restart` starts it again with the same ones).
spawn_apiserver() {
	local state=$1 extra_api=() etcd_url api_port
	read -r -a extra_api <<<"${PUSHROLL_KUBE_APISERVER_ARGS:-}"
	etcd_url=$(cat "$state/etcd.url")
	api_port=$(cat "$state/apiserver.port")
	spawn "$state" kube-apiserver "$BIN_DIR/kube-apiserver" \
		--etcd-servers "$etcd_url" \
		--bind-address 127.0.0.1 \
		--advertise-address 127.0.0.1 \
		--secure-port "$api_port" \
		--insecure-port 0 \
		--tls-cert-file "$state/pki/apiserver.crt" \
		--tls-private-key-file "$state/pki/apiserver.key" \
		--client-ca-file "$state/pki/ca.crt" \
		--token-auth-file "$state/tokens.csv" \
		--authorization-mode RBAC \
		--anonymous-auth=false \
		--service-account-key-file "$state/pki/sa.pub" \
		--service-account-signing-key-file "$state/pki/sa.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-cluster-ip-range 10.0.0.0/24 \
		--endpoint-reconciler-type none \
		--allow-privileged=true \
		--profiling=false \
		--cert-dir "$state/pki" \
		--v 1 \
		"${extra_api[@]}"
}

start_attempt() {
	local state=$1 t0=$2 extra_kcm=()
	read -r -a extra_kcm <<<"${PUSHROLL_KUBE_CONTROLLER_MANAGER_ARGS:-}"
	# Fresh start: nothing from an earlier run survives.
	rm -rf "$state/etcd-data" "$state/pki" "$state/kcm-certs" "$state/logs" \
		"$state"/kubeconfig* "$state/env" "$state"/*.token "$state/tokens.csv" "$state/apiserver.url"
	mkdir -p "$state/logs"
	echo "$state" >"$CURRENT_FILE"

	make_pki "$state/pki"

	local admin_token
	admin_token=$(random_token)
	echo "$admin_token" >"$state/admin.token"
	(
		umask 077
		echo "$admin_token,pushroll-admin,pushroll-admin,\"system:masters\"" >"$state/tokens.csv"
		local n t
		for n in "${SA_NAMES[@]}"; do
			t=$(random_token)
			echo "$t" >"$state/$n.token"
			echo "$t,system:serviceaccount:$SA_NAMESPACE:$n,pushroll-test-$n,\"system:serviceaccounts,system:serviceaccounts:$SA_NAMESPACE\"" >>"$state/tokens.csv"
		done
	)
	chmod 600 "$state"/*.token

	local ports etcd_port peer_port api_port kcm_port
	ports=$(free_ports 4)
	read -r etcd_port peer_port api_port kcm_port <<<"$ports"
	local server="https://127.0.0.1:$api_port"
	echo "$server" >"$state/apiserver.url"
	log "start: state dir $state; ports etcd=$etcd_port apiserver=$api_port controller-manager=$kcm_port"

	# ---- etcd
	local etcd_url="http://127.0.0.1:$etcd_port"
	spawn "$state" etcd etcd \
		--name pushroll-real \
		--data-dir "$state/etcd-data" \
		--listen-client-urls "$etcd_url" \
		--advertise-client-urls "$etcd_url" \
		--listen-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-cluster "pushroll-real=http://127.0.0.1:$peer_port" \
		--initial-cluster-state new \
		--quota-backend-bytes 1073741824 \
		--log-level warn --logger zap
	local deadline=$(($(now) + START_TIMEOUT))
	wait_for "$state" etcd "etcd /health" "$deadline" \
		sh -c "curl -fsS --max-time 2 '$etcd_url/health' | grep -q '\"health\":\"true\"'"
	log "start: etcd up ($(($(now) - t0))s)"

	# ---- kube-apiserver
	echo "$etcd_url" >"$state/etcd.url"
	echo "$api_port" >"$state/apiserver.port"
	spawn_apiserver "$state"
	wait_for "$state" kube-apiserver "kube-apiserver /readyz" "$deadline" readyz "$state"
	log "start: kube-apiserver ready ($(($(now) - t0))s)"

	write_kubeconfig "$state/kubeconfig" "$server" "$state/pki/ca.crt" pushroll-admin "$admin_token"
	local n
	for n in "${SA_NAMES[@]}"; do
		write_kubeconfig "$state/kubeconfig-$n" "$server" "$state/pki/ca.crt" \
			"system:serviceaccount:$SA_NAMESPACE:$n" "$(cat "$state/$n.token")"
	done

	# ---- kube-controller-manager (no node, route, service-LB or volume
	# controllers: there are no nodes and no cloud)
	local controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-pvc-protection,-pv-protection,-ttl,-csrsigning,-csrapproving,-csrcleaner'
	spawn "$state" kube-controller-manager "$BIN_DIR/kube-controller-manager" \
		--kubeconfig "$state/kubeconfig" \
		--authentication-kubeconfig "$state/kubeconfig" \
		--authorization-kubeconfig "$state/kubeconfig" \
		--bind-address 127.0.0.1 \
		--secure-port "$kcm_port" \
		--port 0 \
		--cert-dir "$state/kcm-certs" \
		--leader-elect=false \
		--controllers "$controllers" \
		--service-account-private-key-file "$state/pki/sa.key" \
		--root-ca-file "$state/pki/ca.crt" \
		--use-service-account-credentials=false \
		--profiling=false \
		--v 1 \
		"${extra_kcm[@]}"
	wait_for "$state" kube-controller-manager "kube-controller-manager /healthz" "$deadline" \
		sh -c "curl -fsSk --max-time 2 https://127.0.0.1:$kcm_port/healthz | grep -qx ok"
	# Proof the controllers really run: the serviceaccount controller creates
	# the ServiceAccount `default` in namespace `default`.
	wait_for "$state" kube-controller-manager "ServiceAccount default/default (created by the controller-manager)" \
		"$deadline" api "$state" GET /api/v1/namespaces/default/serviceaccounts/default
	log "start: kube-controller-manager running ($(($(now) - t0))s)"

	if [ "${PUSHROLL_KUBE_BOOTSTRAP:-1}" != 0 ]; then
		api_ensure "$state" "/api/v1/namespaces/$SA_NAMESPACE" /api/v1/namespaces \
			"{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$SA_NAMESPACE\"}}"
		for n in "${SA_NAMES[@]}"; do
			api_ensure "$state" "/api/v1/namespaces/$SA_NAMESPACE/serviceaccounts/$n" \
				"/api/v1/namespaces/$SA_NAMESPACE/serviceaccounts" \
				"{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":{\"name\":\"$n\",\"namespace\":\"$SA_NAMESPACE\"}}"
		done
	fi

	{
		echo "PUSHROLL_REAL_STATE_DIR=$state"
		echo "PUSHROLL_REAL_APISERVER=$server"
		echo "PUSHROLL_REAL_KUBECONFIG=$state/kubeconfig"
		echo "PUSHROLL_REAL_KUBECONFIG_SERVE=$state/kubeconfig-pushroll"
		echo "PUSHROLL_REAL_KUBECONFIG_INDEXER=$state/kubeconfig-pushroll-indexer"
		echo "PUSHROLL_REAL_CA_FILE=$state/pki/ca.crt"
		echo "PUSHROLL_REAL_KUBE_VERSION=v$KUBE_VERSION"
	} >"$state/env.tmp"
	mv "$state/env.tmp" "$state/env"
}

# ------------------------------------------------------------------ restart

# Kills kube-apiserver (SIGKILL: a crash, and no minute-long drain of open
# watches), moves etcd's revision past every client's resourceVersion, and
# starts it again on the same port. Clients re-watch from an older
# resourceVersion than the new watch cache holds, get 410 Gone and re-list:
# what an API server restart, upgrade or etcd compaction does to them in a
# real cluster. etcd and the controller-manager keep running.
cmd_restart() {
	local state=${1:-} t0 pid deadline
	state=$(resolve_state_dir "$state")
	t0=$(now)
	pid=$(component_pid "$state" kube-apiserver)
	[ -n "$pid" ] || die "restart: kube-apiserver of $state is not running"
	kill -KILL "$pid" 2>/dev/null || true
	while [ -n "$(component_pid "$state" kube-apiserver)" ]; do sleep 0.05; done
	# etcd's v3 JSON gateway: keys and values are base64.
	curl -fsS --max-time 5 -X POST "$(cat "$state/etcd.url")/v3/kv/put" \
		-d "{\"key\":\"$(printf '/pushroll-test/restart' | base64)\",\"value\":\"$(date +%s%N | base64)\"}" >/dev/null ||
		die "restart: could not write to etcd"
	spawn_apiserver "$state"
	deadline=$(($(now) + START_TIMEOUT))
	wait_for "$state" kube-apiserver "kube-apiserver /readyz" "$deadline" readyz "$state" ||
		{ dump_logs "$state"; die "restart: kube-apiserver did not become ready"; }
	log "restart: kube-apiserver ready again ($(($(now) - t0))s)"
}

# ---------------------------------------------------------------------- stop

cmd_stop() {
	local state=${1:-} purge=${2:-}
	state=$(resolve_state_dir "$state")
	[ -n "$state" ] || { log "stop: no state dir given and none recorded; nothing to do"; return 0; }
	[ -d "$state" ] || { log "stop: $state does not exist; nothing to do"; return 0; }
	state=$(cd "$state" && pwd -P)
	local i name rc=0
	for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
		name=${COMPONENTS[i]}
		stop_component "$state" "$name" || rc=1
	done
	[ $rc -eq 0 ] || die "stop: some processes could not be stopped (see above)"
	rm -rf "$state/etcd-data" "$state/kcm-certs"
	rm -f "$state/env"
	if [ "$purge" = --purge ]; then
		rm -rf "$state"
		log "stop: removed $state"
	else
		log "stop: stopped; data removed; logs kept in $state/logs"
	fi
	if [ -f "$CURRENT_FILE" ] && [ "$(cat "$CURRENT_FILE")" = "$state" ]; then
		rm -f "$CURRENT_FILE"
	fi
}

# -------------------------------------------------------------------- status

cmd_status() {
	local state
	state=$(resolve_state_dir "${1:-}")
	if binaries_ok; then
		echo "binaries: $BIN_DIR (Kubernetes v$KUBE_VERSION, cache $(du -sh "$CACHE" 2>/dev/null | cut -f1))"
	else
		echo "binaries: not built (run: $0 build)"
	fi
	if [ -z "$state" ] || [ ! -d "$state" ]; then
		echo "state: none"
		return 3
	fi
	echo "state: $state"
	local name pid rc=0
	for name in "${COMPONENTS[@]}"; do
		pid=$(component_pid "$state" "$name")
		if [ -n "$pid" ]; then
			echo "  $name: running, pid $pid, rss $(awk '/^VmRSS/{printf "%d MiB", $2/1024}' "/proc/$pid/status")"
		else
			echo "  $name: not running"
			rc=3
		fi
	done
	if [ -f "$state/apiserver.url" ] && [ -f "$state/admin.token" ]; then
		if readyz "$state"; then
			echo "  apiserver: $(cat "$state/apiserver.url") ready"
		else
			echo "  apiserver: $(cat "$state/apiserver.url") NOT ready"
			rc=3
		fi
	fi
	return $rc
}

# ----------------------------------------------------------------------- run

cmd_run() {
	local state=
	if [ $# -gt 0 ] && [ "$1" != -- ]; then
		state=$1
		shift
	fi
	[ "${1:-}" = -- ] && shift
	[ $# -gt 0 ] || die "usage: $SCRIPT_NAME run [STATE_DIR] -- CMD [ARGS...]"
	local purge=''
	if [ -z "$state" ]; then
		state=$(mktemp -d "${TMPDIR:-/tmp}/pushroll-kube.XXXXXX")
		purge=--purge # our own temp dir: removed on success, kept (logs) on failure
	fi
	cmd_start "$state" >/dev/null
	state=$(cd "$state" && pwd -P)
	# shellcheck disable=SC2064
	trap "rc=\$?; if [ \$rc -eq 0 ]; then cmd_stop '$state' $purge || true; else cmd_stop '$state' || true; fi" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	set -a
	# shellcheck disable=SC1091
	. "$state/env"
	set +a
	local rc=0
	"$@" || rc=$?
	log "run: command exited with $rc"
	return $rc
}

# ---------------------------------------------------------------------- main

main() {
	local cmd=${1:-help}
	[ $# -gt 0 ] && shift
	case "$cmd" in
	install-deps) cmd_install_deps ;;
	build) cmd_build ;;
	start) cmd_start "$@" ;;
	stop)
		local s='' p=''
		for a in "$@"; do
			case "$a" in --purge) p=--purge ;; *) s=$a ;; esac
		done
		cmd_stop "$s" "$p"
		;;
	status) cmd_status "$@" ;;
	restart) cmd_restart "$@" ;;
	run | run-tests) cmd_run "$@" ;;
	help | -h | --help) usage ;;
	*) usage; die "unknown subcommand '$cmd'" ;;
	esac
}

main "$@"
