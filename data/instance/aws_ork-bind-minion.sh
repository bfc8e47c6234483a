#!/bin/sh
# aws_ork key binding, instance side: paste into the instance's user data (or run it from
# there) on an image that has salt-minion and the AWS CLI installed.
#
# It makes the minion's key pair with Salt's own tooling (if there is none; the minion
# config's keysize, 2048 by default, 4096 at most), names the minion after the instance id
# and, in ONE ec2 create-tags call on this instance, publishes:
#   - the key's fingerprint on the binding tag (salt:minion-fingerprint: what masters on an
#     older aws_ork read), and
#   - the public key itself on salt:minion-key-0, salt:minion-key-1 (, salt:minion-key-2 for
#     3072/4096): the PEM body of minion.pub (the standard base64 of its DER
#     SubjectPublicKeyInfo) cut into 256-character values, in order;
# then starts salt-minion. aws_ork (KeyBinding = tag) stores that key as accepted before the
# minion first authenticates, so the minion is accepted at once and any other key presented
# under this id is denied by Salt.
#
# The instance role needs only: ec2:CreateTags on this instance itself, for the fingerprint
# tag key and the key tag keys salt:minion-key-0, -1 and -2 (the CloudFormation template's
# KeyBindingPolicy; see the README, "Key binding"). Settings (environment, or edit here):
set -eu
TAG_KEY="${AWS_ORK_BINDING_TAG:-salt:minion-fingerprint}"
SALT_CONFIG_DIR="${SALT_CONFIG_DIR:-/etc/salt}"
CONF_DIR="$SALT_CONFIG_DIR/minion.d"
# the key tags: fixed names (aws_ork reads these), each value at most EC2's 256 characters
KEY_TAG_PREFIX=salt:minion-key-
KEY_TAG_WIDTH=256
MAX_KEY_TAGS=3
IMDS=http://169.254.169.254/latest

# IMDSv2: a session token first, then the instance's own identity
token=$(curl -sf -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
imds() { curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"; }
instance_id=$(imds instance-id)
region=$(imds placement/region)
case "$instance_id" in
  i-[0-9a-f]*) ;;
  *) echo "aws_ork-bind: no instance id from IMDS" >&2; exit 1 ;;
esac

# the minion id is the instance id (what aws_ork manages)
mkdir -p "$CONF_DIR"
printf '%s\n' "$instance_id" > "$SALT_CONFIG_DIR/minion_id"
# Salt's default acceptance_wait_time (10 s) is kept: the published key is stored as accepted
# before the minion's first authentication, which therefore succeeds at once.
# rejected_retry: the master may still deny our first authentication: a master on an older
# aws_ork (fingerprint binding only), or any master that had an impostor's key pending under
# this id first. A denied minion exits by default; aws_ork then accepts our key from the
# denied keys, so retry.
cat > "$CONF_DIR/aws_ork.conf" <<CONF
id: $instance_id
rejected_retry: True
CONF

# the key pair, made by Salt itself, where the minion's config keeps it, before it first starts
PKI_DIR=$(salt-call -c "$SALT_CONFIG_DIR" --local --out=txt config.get pki_dir | sed "s/^local: //")
# (salt-key writes some keys of its own beside them: made in a temp dir, only the minion's
# pair is kept)
if [ ! -s "$PKI_DIR/minion.pem" ] || [ ! -s "$PKI_DIR/minion.pub" ]; then
  # the minion config's keysize (Salt's default 2048), which salt-key does not read itself
  KEY_SIZE=$(salt-call -c "$SALT_CONFIG_DIR" --local --out=txt config.get keysize \
    | sed "s/^local: //")
  case "$KEY_SIZE" in
    2048|3072|4096) ;;
    *) echo "aws_ork-bind: keysize $KEY_SIZE: aws_ork accepts 2048, 3072 or 4096" >&2; exit 1 ;;
  esac
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  work=$(mktemp -d)
  salt-key --gen-keys=minion --gen-keys-dir="$work" --keysize="$KEY_SIZE" >/dev/null 2>&1 || true
  [ -s "$work/minion.pem" ] && [ -s "$work/minion.pub" ] || {
    echo "aws_ork-bind: salt-key made no key pair" >&2; exit 1; }
  install -m 600 "$work/minion.pem" "$PKI_DIR/minion.pem"
  install -m 644 "$work/minion.pub" "$PKI_DIR/minion.pub"
  rm -rf "$work"
fi

# the fingerprint as Salt computes it (aws_ork accepts salt-key -f's form and this one)
finger=$(salt-call -c "$SALT_CONFIG_DIR" --local --out=txt key.finger | sed "s/^local: //")
case "$finger" in
  [0-9a-f][0-9a-f]:*) ;;
  *) echo "aws_ork-bind: unexpected fingerprint: $finger" >&2; exit 1 ;;
esac

# the key tags: minion.pub must be a "BEGIN PUBLIC KEY" PEM (SubjectPublicKeyInfo), whose
# body, its lines joined, is the standard base64 of the DER aws_ork decodes (no openssl
# needed); anything else (an "RSA PUBLIC KEY", stray text) is refused here, not published
pub="$PKI_DIR/minion.pub"
first=$(sed -n '1p' "$pub")
last=$(sed -n '$p' "$pub")
body=$(sed '1d;$d' "$pub" | tr -d '\n')
if [ "$first" != "-----BEGIN PUBLIC KEY-----" ] || [ "$last" != "-----END PUBLIC KEY-----" ]; then
  echo "aws_ork-bind: $pub is not a -----BEGIN PUBLIC KEY----- PEM" >&2; exit 1
fi
case "$body" in
  ''|*[!A-Za-z0-9+/=]*) echo "aws_ork-bind: $pub has no base64 body" >&2; exit 1 ;;
esac

# one create-tags call on this instance's own tags: the fingerprint, then the key tags
set -- "Key=$TAG_KEY,Value=$finger"
index=0
for chunk in $(printf '%s\n' "$body" | fold -w "$KEY_TAG_WIDTH"); do
  set -- "$@" "Key=$KEY_TAG_PREFIX$index,Value=$chunk"
  index=$((index + 1))
done
if [ "$index" -gt "$MAX_KEY_TAGS" ]; then
  echo "aws_ork-bind: $pub needs $index key tags, at most $MAX_KEY_TAGS (RSA-4096)" >&2; exit 1
fi
aws ec2 create-tags --region "$region" --resources "$instance_id" --tags "$@"

# then start the minion: its key is bound (and, on a current master, accepted) already
if command -v systemctl >/dev/null 2>&1; then
  systemctl enable salt-minion >/dev/null 2>&1 || true
  systemctl restart salt-minion
else
  service salt-minion restart
fi
