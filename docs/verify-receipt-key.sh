#!/bin/sh
# verify-receipt-key.sh — check that a credvault receipt key was handed over to a successor
# by the key you trust, with openssl (>= 3) alone.
#
#   sh verify-receipt-key.sh LINK.json TRUSTED_PUBLIC_KEY
#
# LINK.json           one line of `credvault receipt-keys --links` (RFC 8785 canonical JSON):
#                     the statement "key B succeeds key A from time T", signed by key A.
# TRUSTED_PUBLIC_KEY  key A, base64 of 32 bytes, as your provider gave it to you before.
#
# Exit 0: key A signed the link; the successor key is printed on the line
#         "SUCCESSOR: <base64>" — trust it from then on (verify-receipt.sh takes it), and
#         receipts signed by key A only if they are dated before "valid from".
# Exit 1: it was not (altered, another key, not a link). Exit 2: usage or a missing tool.
set -eu
LC_ALL=C
export LC_ALL

LABEL='credvault/v1/receipt-key'
SPKI_PREFIX='\060\052\060\005\006\003\053\145\160\003\041\000'

usage() { echo "usage: sh verify-receipt-key.sh LINK.json TRUSTED_PUBLIC_KEY_BASE64" >&2; exit 2; }
fail() { echo "NOT VERIFIED: $1" >&2; exit 1; }

[ "$#" -eq 2 ] || usage
link=$1
key=$2
[ -n "$key" ] || usage
[ -r "$link" ] || { echo "cannot read $link" >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || { echo "openssl (>= 3) is needed" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT HUP INT TERM
tr -d '\n' < "$link" > "$tmp/link"

field() {
    sed -n "s/.*,\"$1\":\"\\([^\"]*\\)\".*/\\1/p; s/^{\"$1\":\"\\([^\"]*\\)\".*/\\1/p" \
        "$tmp/link" | head -n 1
}

[ "$(field format)" = "credvault-receipt-key/1" ] || fail "not a credvault receipt key link"
[ "$(grep -o ',"signature":"' "$tmp/link" | wc -l)" -eq 1 ] || fail "no single signature"
sig=$(sed -n 's/.*,"signature":"\([A-Za-z0-9+/=]*\)".*/\1/p' "$tmp/link")
[ -n "$sig" ] || fail "malformed signature"
printf '%s' "$LABEL" > "$tmp/message"
sed 's/,"signature":"[A-Za-z0-9+/=]*"//' "$tmp/link" | tr -d '\n' >> "$tmp/message"
printf '%s' "$sig" | openssl base64 -d -A > "$tmp/sig" 2>/dev/null || fail "malformed signature"
[ "$(wc -c < "$tmp/sig")" -eq 64 ] || fail "malformed signature"

printf "$SPKI_PREFIX" > "$tmp/key.der"
printf '%s' "$key" | openssl base64 -d -A >> "$tmp/key.der" 2>/dev/null || usage
[ "$(wc -c < "$tmp/key.der")" -eq 44 ] || { echo "PUBLIC_KEY: expected base64 of 32 bytes" >&2; exit 2; }
trusted_id=$(tail -c 32 "$tmp/key.der" | openssl dgst -sha256 -hex | sed 's/.*= *//')
[ "$(field predecessor)" = "$trusted_id" ] || fail "the link is not from the key you trust"

openssl pkeyutl -verify -pubin -inkey "$tmp/key.der" -keyform DER -rawin \
    -in "$tmp/message" -sigfile "$tmp/sig" > /dev/null 2>&1 || fail "the signature does not match"

successor=$(field public_key)
printf '%s' "$successor" | openssl base64 -d -A > "$tmp/succ" 2>/dev/null || fail "malformed successor key"
[ "$(wc -c < "$tmp/succ")" -eq 32 ] || fail "malformed successor key"
[ "$(openssl dgst -sha256 -hex < "$tmp/succ" | sed 's/.*= *//')" = "$(field key_id)" ] \
    || fail "the successor's key id does not match its key"
echo "VERIFIED: key $trusted_id handed over to key $(field key_id)"
printf '%-24s%s\n' "vault:" "$(field vault_id)"
printf '%-24s%s\n' "valid from:" "$(field valid_from)"
echo "SUCCESSOR: $successor"
exit 0
