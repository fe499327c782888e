#!/bin/sh
# verify-receipt.sh — check a credvault purge receipt with openssl (>= 3) alone.
#
#   sh verify-receipt.sh RECEIPT.json PUBLIC_KEY
#
# RECEIPT.json  the receipt file as you received it (`credvault receipt ENG --output FILE`):
#               one line, the RFC 8785 (JCS) canonical JSON of the signed receipt.
# PUBLIC_KEY    the vault's receipt key, base64 of 32 bytes, as your provider gave it to
#               you *before* (`credvault info --public-key`), not the one inside the receipt.
#
# Exit 0: the receipt was signed by that key and is unaltered; its facts are printed.
# Exit 1: it was not (altered, another key, not a credvault receipt, or format 1).
# Exit 2: wrong usage or a missing tool. Nothing here ever trusts the receipt's own key.
set -eu
LC_ALL=C
export LC_ALL

LABEL='credvault/v1/purge-receipt'
# DER prefix of an Ed25519 public key (SubjectPublicKeyInfo, RFC 8410), in octal.
SPKI_PREFIX='\060\052\060\005\006\003\053\145\160\003\041\000'

usage() { echo "usage: sh verify-receipt.sh RECEIPT.json PUBLIC_KEY_BASE64" >&2; exit 2; }
fail() { echo "NOT VERIFIED: $1" >&2; exit 1; }

[ "$#" -eq 2 ] || usage
receipt=$1
key=$2
[ -n "$key" ] || usage
[ -r "$receipt" ] || { echo "cannot read $receipt" >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || { echo "openssl (>= 3) is needed" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT HUP INT TERM

# The canonical form holds no raw newline (JCS escapes it), so only the final one goes.
tr -d '\n' < "$receipt" > "$tmp/receipt"

field() { # the string value of a top-level member (display only: all of it is signed)
    sed -n "s/.*,\"$1\":\"\\([^\"]*\\)\".*/\\1/p; s/^{\"$1\":\"\\([^\"]*\\)\".*/\\1/p" \
        "$tmp/receipt" | head -n 1
}

case "$(field format)" in
    credvault-purge-receipt/2) ;;
    credvault-purge-receipt/1) fail "a format-1 receipt: check it with 'credvault verify-receipt'" ;;
    *) fail "not a credvault purge receipt (format 2, one line of canonical JSON)" ;;
esac

# One signature member; the signed text is the receipt without it. In canonical JSON a
# quote inside a string is always escaped, so ',"signature":"' can only be the member.
[ "$(grep -o ',"signature":"' "$tmp/receipt" | wc -l)" -eq 1 ] || fail "no single signature"
sig=$(sed -n 's/.*,"signature":"\([A-Za-z0-9+/=]*\)".*/\1/p' "$tmp/receipt")
[ -n "$sig" ] || fail "malformed signature"
printf '%s' "$LABEL" > "$tmp/message"
sed 's/,"signature":"[A-Za-z0-9+/=]*"//' "$tmp/receipt" | tr -d '\n' >> "$tmp/message"

printf '%s' "$sig" | openssl base64 -d -A > "$tmp/sig" 2>/dev/null || fail "malformed signature"
[ "$(wc -c < "$tmp/sig")" -eq 64 ] || fail "malformed signature"

# The trusted key, as DER; the receipt must also name it (public_key and key_id).
printf "$SPKI_PREFIX" > "$tmp/key.der"
printf '%s' "$key" | openssl base64 -d -A >> "$tmp/key.der" 2>/dev/null || usage
[ "$(wc -c < "$tmp/key.der")" -eq 44 ] || { echo "PUBLIC_KEY: expected base64 of 32 bytes" >&2; exit 2; }
[ "$(field public_key)" = "$key" ] || fail "signed by another key than the one you trust"
key_id=$(tail -c 32 "$tmp/key.der" | openssl dgst -sha256 -hex | sed 's/.*= *//')
[ "$(field key_id)" = "$key_id" ] || fail "the receipt names another key"

openssl pkeyutl -verify -pubin -inkey "$tmp/key.der" -keyform DER -rawin \
    -in "$tmp/message" -sigfile "$tmp/sig" > /dev/null 2>&1 || fail "the signature does not match"

show() { printf '%-24s%s\n' "$1" "$(field "$2" | tr -d '\000-\037\177')"; }
echo "VERIFIED: signed by key $key_id"
show "engagement:" engagement
show "client:" client
show "purged at:" purged_at
show "reason:" reason
show "purged by:" purged_by
complete=$(field destruction_complete_at)
printf '%-24s%s\n' "destruction complete:" "${complete:-NOT YET (copies remained when this receipt was signed)}"
horizon=$(field backups_expire_at)  # a team vault's: backups and WAL keep copies until then
[ -z "$horizon" ] || printf '%-24s%s\n' "backups expire by:" "$horizon"
exports=$(grep -o '"sha256":"[0-9a-f]*"' "$tmp/receipt" | sed 's/.*:"\(.*\)"/\1/' | tr '\n' ' ')
[ -z "$exports" ] || printf '%-24s%s\n' "your export(s), sha256:" "$exports"
exit 0
