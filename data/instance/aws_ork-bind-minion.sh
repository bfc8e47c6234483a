#!/bin/sh
# aws_ork key binding, instance side: paste into the instance's user data (or run it from
# there) on an image that has salt-minion and the AWS CLI installed.
#
# It makes the minion's key pair with Salt's own tooling (if there is none), publishes the
# key's fingerprint on this instance's own EC2 tag, names the minion after the instance id,
# sets a short acceptance_wait_time and starts salt-minion. aws_ork (KeyBinding = tag) then
# accepts exactly that key, whoever connects first under this id.
#
# The instance role needs only: ec2:CreateTags on itself, for this one tag key (see the
# README, "Key binding"). Settings (environment, or edit here):
set -eu
TAG_KEY="${AWS_ORK_BINDING_TAG:-salt:minion-fingerprint}"
SALT_CONFIG_DIR="${SALT_CONFIG_DIR:-/etc/salt}"
CONF_DIR="$SALT_CONFIG_DIR/minion.d"
# seconds before the minion's first retry while its key waits for acceptance (Salt's default
# is 10), doubling up to ACCEPTANCE_WAIT_MAX: aws_ork accepts the bound key within a second of
# it being presented, so the first retry usually succeeds
ACCEPTANCE_WAIT="${AWS_ORK_ACCEPTANCE_WAIT:-1}"
ACCEPTANCE_WAIT_MAX="${AWS_ORK_ACCEPTANCE_WAIT_MAX:-10}"
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
# rejected_retry: if an impostor's key was pending first, the master denies ours, and a
# denied minion exits by default; aws_ork accepts our key from the denied keys, so retry.
cat > "$CONF_DIR/aws_ork.conf" <<CONF
id: $instance_id
acceptance_wait_time: $ACCEPTANCE_WAIT
acceptance_wait_time_max: $ACCEPTANCE_WAIT_MAX
rejected_retry: True
CONF

# the key pair, made by Salt itself, where the minion's config keeps it, before it first starts
PKI_DIR=$(salt-call -c "$SALT_CONFIG_DIR" --local --out=txt config.get pki_dir | sed "s/^local: //")
# (salt-key writes some keys of its own beside them: made in a temp dir, only the minion's
# pair is kept)
if [ ! -s "$PKI_DIR/minion.pem" ] || [ ! -s "$PKI_DIR/minion.pub" ]; then
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  work=$(mktemp -d)
  salt-key --gen-keys=minion --gen-keys-dir="$work" >/dev/null 2>&1 || true
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

# publish it on this instance's own tag, then start the minion
aws ec2 create-tags --region "$region" --resources "$instance_id" \
  --tags "Key=$TAG_KEY,Value=$finger"
if command -v systemctl >/dev/null 2>&1; then
  systemctl enable salt-minion >/dev/null 2>&1 || true
  systemctl restart salt-minion
else
  service salt-minion restart
fi
