//! Static pod manifests and the kubelet config, in the byte layout kubeadm writes.

const K8S_VERSION: &str = "v1.32.4";

fn pod(
    name: &str,
    ip: &str,
    annotations: &str,
    command: &[String],
    volumes: &[(&str, &str, bool)],
) -> String {
    // `etcd@3.4.23`: etcd, as kubeadm writes it for that version.
    let full = name;
    let name = name.split('@').next().unwrap_or(name);
    let mut s = String::new();
    s.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n");
    if !annotations.is_empty() {
        s.push_str("  annotations:\n");
        s.push_str(annotations);
    }
    s.push_str("  creationTimestamp: null\n  labels:\n");
    s.push_str(&format!("    component: {name}\n    tier: control-plane\n"));
    s.push_str(&format!(
        "  name: {name}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n"
    ));
    for c in command {
        s.push_str(&format!("    - {c}\n"));
    }
    let image = match full.strip_prefix("etcd@") {
        Some(version) => format!("registry.k8s.io/etcd:{version}-0"),
        None => format!("registry.k8s.io/{name}:{K8S_VERSION}"),
    };

    s.push_str(&format!(
        "    image: {image}\n    imagePullPolicy: IfNotPresent\n"
    ));
    s.push_str(&probes(full, ip));
    s.push_str(&format!(
        "    name: {name}\n    resources:\n      requests:\n        cpu: 250m\n    volumeMounts:\n"
    ));
    for (vol, path, ro) in volumes {
        s.push_str(&format!("    - mountPath: {path}\n      name: {vol}\n"));
        if *ro {
            s.push_str("      readOnly: true\n");
        }
    }
    s.push_str("  hostNetwork: true\n  priority: 2000001000\n  priorityClassName: system-node-critical\n  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n  volumes:\n");
    for (vol, path, _) in volumes {
        let ty = if path.ends_with(".conf") {
            "FileOrCreate"
        } else {
            "DirectoryOrCreate"
        };
        s.push_str(&format!(
            "  - hostPath:\n      path: {path}\n      type: {ty}\n    name: {vol}\n"
        ));
    }
    s.push_str("status: {}\n");
    s
}

/// The probes kubeadm writes for `name`, at the node's address: in the sandbox every
/// node shares this machine's loopback, so what kubeadm binds to 127.0.0.1 (the
/// controller manager's and scheduler's secure ports, etcd's metrics, the kubelet's
/// healthz) binds to the node's own loopback address instead.
/// Whether `etcd@VERSION` predates etcd's `/livez` and `/readyz` (3.5.11).
fn health_only(name: &str) -> bool {
    let Some(v) = name.strip_prefix("etcd@") else {
        return false;
    };
    let n: Vec<u32> = v
        .split(['.', '-'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    n.as_slice() < [3, 5, 11].as_slice()
}

fn probes(name: &str, ip: &str) -> String {
    let (port, scheme, live, start, ready) = match name {
        "kube-apiserver" => (6443, "HTTPS", "/livez", "/livez", Some("/readyz")),
        "kube-controller-manager" => (10257, "HTTPS", "/healthz", "/healthz", None),
        "kube-scheduler" => (10259, "HTTPS", "/healthz", "/healthz", None),
        // etcd before 3.5.11 has no /livez and /readyz: kubeadm probes /health there.
        _ if health_only(name) => (
            2381,
            "HTTP",
            "/health?exclude=NOSPACE&serializable=true",
            "/health?serializable=false",
            None,
        ),
        _ => (2381, "HTTP", "/livez", "/readyz", None),
    };
    let probe = |kind: &str, path: &str, failures: u32, timeout: u32| {
        format!(
            "    {kind}:\n      failureThreshold: {failures}\n      httpGet:\n        host: {ip}\n        path: {path}\n        port: {port}\n        scheme: {scheme}\n      initialDelaySeconds: 10\n      periodSeconds: 10\n      timeoutSeconds: {timeout}\n"
        )
    };
    let mut s = probe("livenessProbe", live, 8, 15);
    if let Some(ready) = ready {
        s.push_str(&probe("readinessProbe", ready, 3, 15));
    }
    s.push_str(&probe("startupProbe", start, 24, 15));
    s
}

fn flags(component: &str, list: &[(&str, String)]) -> Vec<String> {
    std::iter::once(component.to_string())
        .chain(list.iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}

/// kube-apiserver.yaml for a control-plane node; `verify_kubelets`: with
/// `--kubelet-certificate-authority` (kubeadm sets none).
pub fn apiserver(ip: &str, etcd_servers: &str, verify_kubelets: bool) -> String {
    let p = |f: &str| format!("/etc/kubernetes/pki/{f}");
    let mut list: Vec<(&str, String)> = vec![
        ("advertise-address", ip.to_string()),
        ("allow-privileged", "true".into()),
        ("authorization-mode", "Node,RBAC".into()),
        ("client-ca-file", p("ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("enable-bootstrap-token-auth", "true".into()),
        ("etcd-cafile", p("etcd/ca.crt")),
        ("etcd-certfile", p("apiserver-etcd-client.crt")),
        ("etcd-keyfile", p("apiserver-etcd-client.key")),
        ("etcd-servers", etcd_servers.into()),
        ("kubelet-certificate-authority", p("ca.crt")),
        (
            "kubelet-client-certificate",
            p("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", p("apiserver-kubelet-client.key")),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
        ("proxy-client-cert-file", p("front-proxy-client.crt")),
        ("proxy-client-key-file", p("front-proxy-client.key")),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        ("requestheader-client-ca-file", p("front-proxy-ca.crt")),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".into(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".into()),
        ("requestheader-username-headers", "X-Remote-User".into()),
        ("secure-port", "6443".into()),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc.cluster.local".into(),
        ),
        ("service-account-key-file", p("sa.pub")),
        ("service-account-signing-key-file", p("sa.key")),
        ("service-cluster-ip-range", "10.96.0.0/12".into()),
        ("tls-cert-file", p("apiserver.crt")),
        ("tls-private-key-file", p("apiserver.key")),
    ];
    if !verify_kubelets {
        list.retain(|(k, _)| *k != "kubelet-certificate-authority");
    }
    let cmd = flags("kube-apiserver", &list);
    let ann =
        format!("    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: {ip}:6443\n");
    pod(
        "kube-apiserver",
        ip,
        &ann,
        &cmd,
        &[
            ("ca-certs", "/etc/ssl/certs", true),
            ("etc-ca-certificates", "/etc/ca-certificates", true),
            ("k8s-certs", "/etc/kubernetes/pki", true),
        ],
    )
}

/// kube-controller-manager.yaml.
pub fn controller_manager(ip: &str) -> String {
    let p = |f: &str| format!("/etc/kubernetes/pki/{f}");
    let conf = "/etc/kubernetes/controller-manager.conf".to_string();
    let cmd = flags(
        "kube-controller-manager",
        &[
            ("allocate-node-cidrs", "true".into()),
            ("authentication-kubeconfig", conf.clone()),
            ("authorization-kubeconfig", conf.clone()),
            ("bind-address", ip.into()),
            ("client-ca-file", p("ca.crt")),
            ("cluster-cidr", "10.244.0.0/16".into()),
            ("cluster-name", "kubernetes".into()),
            ("cluster-signing-cert-file", p("ca.crt")),
            ("cluster-signing-key-file", p("ca.key")),
            ("controllers", "*,bootstrapsigner,tokencleaner".into()),
            ("kubeconfig", conf),
            ("leader-elect", "true".into()),
            ("requestheader-client-ca-file", p("front-proxy-ca.crt")),
            ("root-ca-file", p("ca.crt")),
            ("service-account-private-key-file", p("sa.key")),
            ("service-cluster-ip-range", "10.96.0.0/12".into()),
            ("use-service-account-credentials", "true".into()),
        ],
    );
    pod(
        "kube-controller-manager",
        ip,
        "",
        &cmd,
        &[
            ("ca-certs", "/etc/ssl/certs", true),
            ("k8s-certs", "/etc/kubernetes/pki", true),
            (
                "kubeconfig",
                "/etc/kubernetes/controller-manager.conf",
                true,
            ),
        ],
    )
}

/// kube-scheduler.yaml.
pub fn scheduler(ip: &str) -> String {
    let conf = "/etc/kubernetes/scheduler.conf".to_string();
    let cmd = flags(
        "kube-scheduler",
        &[
            ("authentication-kubeconfig", conf.clone()),
            ("authorization-kubeconfig", conf.clone()),
            ("bind-address", ip.into()),
            ("kubeconfig", conf),
            ("leader-elect", "true".into()),
        ],
    );
    pod(
        "kube-scheduler",
        ip,
        "",
        &cmd,
        &[("kubeconfig", "/etc/kubernetes/scheduler.conf", true)],
    )
}

/// etcd.yaml, as kubeadm writes it for etcd `version` (`3.4.23`: its image and probes).
pub fn etcd(name: &str, ip: &str, initial_cluster: &str, version: &str) -> String {
    let p = |f: &str| format!("/etc/kubernetes/pki/etcd/{f}");
    let cmd = flags(
        "etcd",
        &[
            ("advertise-client-urls", format!("https://{ip}:2379")),
            ("cert-file", p("server.crt")),
            ("client-cert-auth", "true".into()),
            ("data-dir", "/var/lib/etcd".into()),
            ("initial-advertise-peer-urls", format!("https://{ip}:2380")),
            ("initial-cluster", initial_cluster.into()),
            ("key-file", p("server.key")),
            (
                "listen-client-urls",
                format!("https://127.0.0.1:2379,https://{ip}:2379"),
            ),
            ("listen-metrics-urls", format!("http://{ip}:2381")),
            ("listen-peer-urls", format!("https://{ip}:2380")),
            ("name", name.into()),
            ("peer-cert-file", p("peer.crt")),
            ("peer-client-cert-auth", "true".into()),
            ("peer-key-file", p("peer.key")),
            ("peer-trusted-ca-file", p("ca.crt")),
            ("trusted-ca-file", p("ca.crt")),
        ],
    );
    let ann = format!("    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://{ip}:2379\n");
    pod(
        &format!("etcd@{version}"),
        ip,
        &ann,
        &cmd,
        &[
            ("etcd-certs", "/etc/kubernetes/pki/etcd", false),
            ("etcd-data", "/var/lib/etcd", false),
        ],
    )
}

/// /var/lib/kubelet/config.yaml (KubeletConfiguration), as kubeadm writes it, its
/// `healthzBindAddress` and `address` (where it serves `:10250`; kubeadm leaves every
/// address, `0.0.0.0`) the node's own loopback address; `server_tls_bootstrap`: with
/// `serverTLSBootstrap: true` (kubeadm writes no such line).
pub fn kubelet_config(ip: &str, server_tls_bootstrap: bool) -> String {
    format!(
        "address: {ip}\napiVersion: kubelet.config.k8s.io/v1beta1\n\
authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    cacheTTL: 0s\n    enabled: true\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n\
authorization:\n  mode: Webhook\n  webhook:\n    cacheAuthorizedTTL: 0s\n    cacheUnauthorizedTTL: 0s\n\
cgroupDriver: systemd\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\n\
containerRuntimeEndpoint: \"\"\ncpuManagerReconcilePeriod: 0s\nevictionPressureTransitionPeriod: 0s\n\
fileCheckFrequency: 0s\nhealthzBindAddress: {ip}\nhealthzPort: 10248\nhttpCheckFrequency: 0s\n\
imageMaximumGCAge: 0s\nimageMinimumGCAge: 0s\nkind: KubeletConfiguration\nlogging:\n  flushFrequency: 0\n  options:\n    json:\n      infoBufferSize: \"0\"\n    text:\n      infoBufferSize: \"0\"\n  verbosity: 0\n\
memorySwap: {{}}\nnodeStatusReportFrequency: 0s\nnodeStatusUpdateFrequency: 0s\nrotateCertificates: true\n\
runtimeRequestTimeout: 0s\n{bootstrap}shutdownGracePeriod: 0s\nshutdownGracePeriodCriticalPods: 0s\n\
staticPodPath: /etc/kubernetes/manifests\nstreamingConnectionIdleTimeout: 0s\nsyncFrequency: 0s\nvolumeStatsAggPeriod: 0s\n",
        bootstrap = if server_tls_bootstrap {
            "serverTLSBootstrap: true\n"
        } else {
            ""
        }
    )
}
