# Certificate generation for the local environment (sourced by `up`).
# One CA signs everything: serving certs for 127.0.0.1/localhost (apiserver, Dovecot), client certs
# for an admin identity (system:masters) and an unprivileged one, and a service-account signing key.

gen_certs() {
  local dir=$1
  mkdir -p "$dir"
  if [ -f "$dir/ca.crt" ] && [ -f "$dir/sa.key" ] && [ -f "$dir/unprivileged.crt" ]; then
    return 0
  fi
  log "generating a CA and certificates in $dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=mailvault local test CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

    issue() { # name subject extensions
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue server "/CN=127.0.0.1" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
    issue admin "/O=system:masters/CN=mailvault-admin" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
    issue unprivileged "/CN=mailvault-unprivileged" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub
    chmod 600 ./*.key
  )
}

# A kubeconfig for one identity; it carries the CA (not the leaf) so clients verify the server.
write_kubeconfig() {
  local out=$1 certs=$2 user=$3
  cat > "$out" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: mailvault-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 < "$certs/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$certs/$user.crt")
    client-key-data: $(base64 -w0 < "$certs/$user.key")
contexts:
- name: $user
  context:
    cluster: mailvault-local
    user: $user
current-context: $user
KUBECONFIG
  chmod 600 "$out"
}
