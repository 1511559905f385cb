#!/bin/sh
# Install, verify and switch the model bundle on the persistent volume, before the runtime starts.
#
#   bundle-init.sh install SRC   copy the bundle at SRC (the bundle image's /bundle) to
#                                $BUNDLES_ROOT/<id> unless it is there already, and ask for it
#   bundle-init.sh activate      `edge verify` the asked-for bundle (sha256 and size of every file),
#                                then point $BUNDLES_ROOT/current at it in one rename. If it fails,
#                                it is removed and the bundle already served (verified again) stays;
#                                with none, the step fails and the runtime does not start.
#   bundle-init.sh wait SRC      (the sync pod) return once the runtime serves the bundle at SRC, or
#                                has refused it and serves the one before: the agent must embed with
#                                the embedder the runtime searches with. Checks every $BUNDLES_WAIT_S.
#
# <id> is the first 16 hex digits of the sha256 of the bundle's manifest.json, which lists the sha256
# of every file: the same bundle always lands in the same directory, another one never does.
# The runtime serves $BUNDLES_ROOT/current (KIOSK_BUNDLE_DIR); `previous` names the bundle served
# before it, kept for rollback with the other newest ones up to $BUNDLES_KEEP. POSIX sh: `install` and
# `wait` run in busybox (the bundle image), `activate` in the runtime image.
set -eu

ROOT=${BUNDLES_ROOT:-/var/lib/kiosk/bundles}
KEEP=${BUNDLES_KEEP:-3}
WAIT_S=${BUNDLES_WAIT_S:-5}

log() { printf 'bundle-init: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Replace the symlink $ROOT/$1 by one to $2 atomically: a rename over the old link (-T: never into the
# directory it points at). Runs in the runtime image (GNU coreutils).
point() {
	ln -sfn "$2" "$ROOT/.$1.new"
	mv -fT "$ROOT/.$1.new" "$ROOT/$1"
}

install_bundle() {
	src=$1
	[ -f "$src/manifest.json" ] || die "$src has no manifest.json: not a bundle"
	id=$(sha256sum "$src/manifest.json" | cut -c1-16)
	mkdir -p "$ROOT"
	if [ -f "$ROOT/$id/manifest.json" ]; then
		log "bundle $id is already on the volume"
	else
		log "copying bundle $id from $src"
		rm -rf "$ROOT/.incoming"
		cp -R "$src" "$ROOT/.incoming"
		sync
		# The rename publishes the directory whole: $ROOT/<id> never holds a half-copied bundle.
		mv "$ROOT/.incoming" "$ROOT/$id"
	fi
	printf '%s\n' "$id" >"$ROOT/.requested.new"
	mv -f "$ROOT/.requested.new" "$ROOT/requested"
}

prune() {
	current=$(readlink "$ROOT/current" 2>/dev/null || true)
	previous=$(readlink "$ROOT/previous" 2>/dev/null || true)
	# `current` and `previous` always stay; the newest others fill up to $KEEP bundles.
	kept=0
	[ -n "$current" ] && kept=$((kept + 1))
	[ -n "$previous" ] && [ "$previous" != "$current" ] && kept=$((kept + 1))
	for dir in $(ls -1dt "$ROOT"/*/ 2>/dev/null); do
		name=$(basename "$dir")
		[ -L "$ROOT/$name" ] && continue
		{ [ "$name" = "$current" ] || [ "$name" = "$previous" ]; } && continue
		if [ "$kept" -lt "$KEEP" ]; then
			kept=$((kept + 1))
		else
			log "removing old bundle $name"
			rm -rf "${ROOT:?}/$name"
		fi
	done
}

activate_bundle() {
	[ -f "$ROOT/requested" ] || die "no bundle was installed: $ROOT/requested is missing"
	id=$(cat "$ROOT/requested")
	[ -d "$ROOT/$id" ] || die "bundle $id is not on the volume"
	old=$(readlink "$ROOT/current" 2>/dev/null || true)
	if ! edge verify "$ROOT/$id"; then
		# Removed, so that the next start copies it again from the image (a bad copy heals itself).
		rm -rf "${ROOT:?}/$id"
		# A store keeps answering on the bundle it had, verified again, rather than go dark; the
		# failure is logged and left in $ROOT/failed for the operator (k3s/README.md).
		if [ -n "$old" ] && [ "$old" != "$id" ] && edge verify "$ROOT/$old" >/dev/null; then
			printf '%s\n' "$id" >"$ROOT/failed"
			log "WARNING: bundle $id failed verification and was removed; still serving $old"
			exit 0
		fi
		die "bundle $id failed verification and was removed; there is no verified bundle to serve"
	fi
	rm -f "$ROOT/failed"
	if [ "$old" != "$id" ]; then
		[ -n "$old" ] && point previous "$old"
		point current "$id"
		log "now serving bundle $id (was: ${old:-none})"
	else
		log "serving bundle $id"
	fi
	prune
}

wait_for_bundle() {
	src=$1
	[ -f "$src/manifest.json" ] || die "$src has no manifest.json: not a bundle"
	id=$(sha256sum "$src/manifest.json" | cut -c1-16)
	log "waiting for the runtime to serve bundle $id"
	while :; do
		current=$(readlink "$ROOT/current" 2>/dev/null || true)
		if [ "$current" = "$id" ]; then
			log "the runtime serves bundle $id"
			return 0
		fi
		if [ -n "$current" ] && [ "$(cat "$ROOT/failed" 2>/dev/null || true)" = "$id" ]; then
			log "WARNING: bundle $id failed verification; the runtime still serves $current, so does the agent"
			return 0
		fi
		sleep "$WAIT_S"
	done
}

case "${1:-}" in
install)
	[ $# -eq 2 ] || die "usage: $0 install SRC"
	install_bundle "$2"
	;;
activate) activate_bundle ;;
wait)
	[ $# -eq 2 ] || die "usage: $0 wait SRC"
	wait_for_bundle "$2"
	;;
*) die "usage: $0 install SRC | activate | wait SRC" ;;
esac
