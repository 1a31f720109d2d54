#!/usr/bin/env bash
# A kubeadm cluster's certificates and kubeconfigs made the way the Kubernetes docs'
# "Certificates (openssl)" page and a careful operator make them, with the openssl and
# kubectl CLIs only (nothing from trustform):
#   - RSA keys in PKCS#1 (`-traditional`, as kubeadm writes them), the front-proxy CA an
#     EC key with its `EC PARAMETERS` block first (`openssl ecparam -genkey`);
#   - kubeconfigs written by `kubectl config … --embed-certs`;
#   - the kubelet's client certificate and key in one dated file behind kubeadm's
#     absolute symlink `kubelet-client-current.pem`;
#   - the kubelet's serving certificate: self-signed `kubelet.crt` as the kubelet makes
#     it unless config.yaml says `serverTLSBootstrap: true` (then one from the CA).
#
# Usage: kubeadm-openssl.sh NODE_ROOT ROLE NAME IP [CA_DIR]
#   ROLE: control-plane (makes the CAs in CA_DIR if missing, and every control-plane
#   file) or worker. Existing files are replaced; manifests and config.yaml are kept.
set -euo pipefail

root=$1 role=$2 name=$3 ip=$4 cas=${5:-$root/../../openssl-cas}
pki=$root/etc/kubernetes/pki
kpki=$root/var/lib/kubelet/pki
mkdir -p "$pki/etcd" "$kpki" "$cas"
umask 077

rsa() { openssl genrsa -traditional -out "$1" 2048 2>/dev/null; }

# ca NAME CN KEYTYPE: a self-signed CA in $cas.
ca() {
  [ -f "$cas/$1.crt" ] && return
  if [ "$3" = ec ]; then
    openssl ecparam -name prime256v1 -genkey -out "$cas/$1.key"
  else
    rsa "$cas/$1.key"
  fi
  openssl req -x509 -new -key "$cas/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
    -out "$cas/$1.crt"
}

# leaf CA OUT SUBJECT EKU [SANS]: OUT.key and OUT.crt signed by CA.
leaf() {
  local caname=$1 out=$2 subj=$3 eku=$4 sans=${5:-}
  rsa "$out.key"
  openssl req -new -key "$out.key" -subj "$subj" -out "$out.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "authorityKeyIdentifier=keyid"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$cas/$caname.crt" -CAkey "$cas/$caname.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
}

# kubeconfig FILE USER CERT KEY SERVER [LINKED]: written by kubectl; LINKED names
# the client certificate and key by path instead of embedding them.
kubeconfig() {
  local file=$1 user=$2 cert=$3 key=$4 server=$5 linked=${6:-}
  rm -f "$file"
  kubectl config --kubeconfig="$file" set-cluster kubernetes \
    --certificate-authority="$cas/ca.crt" --embed-certs=true --server="$server" >/dev/null
  if [ -n "$linked" ]; then
    kubectl config --kubeconfig="$file" set-credentials "$user" \
      --client-certificate="$linked" --client-key="$linked" >/dev/null
  else
    kubectl config --kubeconfig="$file" set-credentials "$user" \
      --client-certificate="$cert" --client-key="$key" --embed-certs=true >/dev/null
  fi
  kubectl config --kubeconfig="$file" set-context "$user@kubernetes" \
    --cluster=kubernetes --user="$user" >/dev/null
  kubectl config --kubeconfig="$file" use-context "$user@kubernetes" >/dev/null
  chmod 600 "$file"
}

server_of() {
  kubectl config view --kubeconfig="$1" -o jsonpath='{.clusters[0].cluster.server}'
}

ca ca kubernetes rsa
ca front-proxy-ca front-proxy-ca ec
ca etcd-ca etcd-ca rsa

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp "$cas/ca.crt" "$pki/ca.crt"
chmod 644 "$pki/ca.crt"
kubelet_server=$(server_of "$root/etc/kubernetes/kubelet.conf")

if [ "$role" = control-plane ]; then
  cp "$cas/ca.key" "$pki/ca.key"
  cp "$cas/front-proxy-ca.crt" "$pki/front-proxy-ca.crt"
  cp "$cas/front-proxy-ca.key" "$pki/front-proxy-ca.key"
  cp "$cas/etcd-ca.crt" "$pki/etcd/ca.crt"
  cp "$cas/etcd-ca.key" "$pki/etcd/ca.key"
  leaf ca "$pki/apiserver" "/CN=kube-apiserver" serverAuth \
    "DNS:$name,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1,IP:$ip,IP:127.0.0.1"
  leaf ca "$pki/apiserver-kubelet-client" "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" clientAuth
  leaf front-proxy-ca "$pki/front-proxy-client" "/CN=front-proxy-client" clientAuth
  leaf etcd-ca "$pki/apiserver-etcd-client" "/CN=kube-apiserver-etcd-client" clientAuth
  leaf etcd-ca "$pki/etcd/server" "/CN=$name" serverAuth,clientAuth \
    "DNS:$name,DNS:localhost,IP:$ip,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1"
  leaf etcd-ca "$pki/etcd/peer" "/CN=$name" serverAuth,clientAuth \
    "DNS:$name,DNS:localhost,IP:$ip,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1"
  leaf etcd-ca "$pki/etcd/healthcheck-client" "/CN=kube-etcd-healthcheck-client" clientAuth
  rsa "$pki/sa.key"
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 644 "$pki"/*.crt "$pki"/etcd/*.crt "$pki/sa.pub"
  rm -f "$cas"/*.srl

  k=$root/etc/kubernetes
  admin_server=$(server_of "$k/admin.conf")
  leaf ca "$tmp/admin" "/O=kubeadm:cluster-admins/CN=kubernetes-admin" clientAuth
  kubeconfig "$k/admin.conf" kubernetes-admin "$tmp/admin.crt" "$tmp/admin.key" "$admin_server"
  leaf ca "$tmp/super" "/O=system:masters/CN=kubernetes-super-admin" clientAuth
  kubeconfig "$k/super-admin.conf" kubernetes-super-admin "$tmp/super.crt" "$tmp/super.key" "$(server_of "$k/super-admin.conf")"
  leaf ca "$tmp/kcm" "/CN=system:kube-controller-manager" clientAuth
  kubeconfig "$k/controller-manager.conf" system:kube-controller-manager "$tmp/kcm.crt" "$tmp/kcm.key" "$(server_of "$k/controller-manager.conf")"
  leaf ca "$tmp/sched" "/CN=system:kube-scheduler" clientAuth
  kubeconfig "$k/scheduler.conf" system:kube-scheduler "$tmp/sched.crt" "$tmp/sched.key" "$(server_of "$k/scheduler.conf")"
  if [ -f "$root/root/.kube/config" ]; then
    cp "$k/admin.conf" "$root/root/.kube/config"
  fi
  rm -f "$cas"/*.srl
fi

# The kubelet: a dated file with certificate and key, behind an absolute symlink.
dated=kubelet-client-2025-06-01-12-00-00.pem
leaf ca "$tmp/kubelet" "/O=system:nodes/CN=system:node:$name" clientAuth
cat "$tmp/kubelet.crt" "$tmp/kubelet.key" >"$kpki/$dated"
chmod 600 "$kpki/$dated"
rm -f "$kpki"/kubelet-client-current.pem
ln -s "/var/lib/kubelet/pki/$dated" "$kpki/kubelet-client-current.pem"
kubeconfig "$root/etc/kubernetes/kubelet.conf" "system:node:$name" "" "" "$kubelet_server" \
  /var/lib/kubelet/pki/kubelet-client-current.pem

if grep -q '^serverTLSBootstrap: true' "$root/var/lib/kubelet/config.yaml"; then
  leaf ca "$tmp/serving" "/O=system:nodes/CN=system:node:$name" serverAuth "DNS:$name,IP:$ip"
  cat "$tmp/serving.crt" "$tmp/serving.key" >"$kpki/kubelet-server-current.pem"
  chmod 600 "$kpki/kubelet-server-current.pem"
else
  rm -f "$kpki/kubelet-server-current.pem" "$kpki"/kubelet-server-*.pem
  rsa "$kpki/kubelet.key"
  openssl req -x509 -new -key "$kpki/kubelet.key" -subj "/CN=$name-ca@1748779200" \
    -days 365 -sha256 -addext "subjectAltName=DNS:$name,IP:$ip" \
    -addext "basicConstraints=critical,CA:TRUE" -out "$kpki/kubelet.crt"
  chmod 644 "$kpki/kubelet.crt"
fi
rm -f "$cas"/*.srl
