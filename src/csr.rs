//! Certificate signing requests and the approver's duty (seed 002 §2, "Approving
//! Certificate Signing Requests"): approve **if and only if** (1) the subject of the
//! request controls the private key that signed it, and (2) the subject is authorized to
//! act in the requested context. (2) is a policy per signer in trustform.yaml
//! ([`crate::config::CsrPolicy`]); a request that breaks a rule is denied, naming each
//! rule it broke, never left hanging. A request for a signer no policy covers is left to
//! its own approver, and listed so.
//!
//! Pure: the requests, the Nodes' addresses and the policies in, decisions out.

use crate::config::CsrPolicy;
use crate::pki::Fingerprint;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One request as the API holds it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `metadata.name`.
    pub name: String,
    /// `spec.signerName`.
    pub signer: String,
    /// `spec.username`: who asked.
    pub username: String,
    /// `spec.groups`.
    pub groups: Vec<String>,
    /// `spec.usages`.
    pub usages: Vec<String>,
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i64>,
    /// The PKCS#10 request (`spec.request`, PEM decoded).
    pub der: Vec<u8>,
    /// `Approved`, `Denied` or `Failed` when a condition says so; `None`: pending.
    pub decided: Option<String>,
}

/// What a PKCS#10 request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// The subject, as text.
    pub subject: String,
    /// Its common name.
    pub common_name: Option<String>,
    /// Its organizations.
    pub organizations: Vec<String>,
    /// DNS names of the subjectAltName extension request.
    pub dns_names: Vec<String>,
    /// IP addresses of it.
    pub ips: Vec<IpAddr>,
    /// SHA-256 of the SubjectPublicKeyInfo.
    pub public_key: Fingerprint,
    /// Whether the request's signature verifies with the public key it carries.
    pub signature_ok: bool,
    /// What it asks that no policy rule can judge, so it is denied: more than one
    /// common name (Go's API server takes the last, this reader would judge the first),
    /// a name in a string type that cannot be read, a subjectAltName other than a DNS
    /// name or an IP address, a subjectAltName extension that does not parse.
    pub unjudgeable: Vec<String>,
}

/// Parse a PKCS#10 request (DER).
pub fn parse(der: &[u8]) -> Result<Asked, String> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, req) = X509CertificationRequest::from_der(der)
        .map_err(|e| format!("not a PKCS#10 request: {e}"))?;
    let info = &req.certification_request_info;
    let mut unjudgeable = vec![];
    let mut read = |what: &str, attrs: Vec<&x509_parser::x509::AttributeTypeAndValue>| {
        attrs
            .into_iter()
            .filter_map(|a| match a.as_str() {
                Ok(t) => Some(t.to_string()),
                Err(_) => {
                    unjudgeable.push(format!("a {what} in a string type trustform cannot read"));
                    None
                }
            })
            .collect::<Vec<String>>()
    };
    let cns = read("common name", info.subject.iter_common_name().collect());
    let organizations = read("organization", info.subject.iter_organization().collect());
    if cns.len() > 1 {
        unjudgeable.push(format!(
            "{} common names (the API server reads the last one)",
            cns.len()
        ));
    }
    let common_name = cns.last().cloned();
    let (mut dns_names, mut ips) = (vec![], vec![]);
    if let Some(exts) = req.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                        GeneralName::IPAddress(b) if b.len() == 4 => {
                            ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")));
                        }
                        GeneralName::IPAddress(b) if b.len() == 16 => {
                            ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes")))
                        }
                        other => unjudgeable.push(format!("the subjectAltName {other}")),
                    }
                }
            }
        }
    }
    // A subjectAltName extension x509-parser could not read is not judged by omission.
    let san_oid = x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
    for attr in info.attributes() {
        if let x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(e) =
            attr.parsed_attribute()
        {
            for ext in &e.extensions {
                if ext.oid == san_oid
                    && !matches!(
                        ext.parsed_extension(),
                        ParsedExtension::SubjectAlternativeName(_)
                    )
                {
                    unjudgeable.push("a subjectAltName extension that does not parse".into());
                }
            }
        }
    }
    Ok(Asked {
        subject: info.subject.to_string(),
        common_name,
        organizations,
        dns_names,
        ips,
        public_key: Fingerprint::of(info.subject_pki.raw),
        signature_ok: req.verify_signature().is_ok(),
        unjudgeable,
    })
}

/// What trustform decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every rule holds.
    Approve,
    /// A rule is broken.
    Deny,
    /// No policy covers its signer: left to its own approver.
    Unmanaged,
}

/// One rule, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `signature`, `key`, `requester`, `subject`, `names`, `usages`, `lifetime`.
    pub rule: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// Why, in a sentence.
    pub why: String,
}

/// The decision on one pending request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The request's name.
    pub name: String,
    /// Its signer.
    pub signer: String,
    /// Who asked.
    pub requester: String,
    /// Its subject.
    pub subject: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Every rule checked, in order.
    pub checks: Vec<Check>,
}

impl Decision {
    /// The message written into the condition: the broken rules (or, for an approval,
    /// every rule that held).
    pub fn message(&self) -> String {
        let (want, lead) = match self.verdict {
            Verdict::Approve => (true, "trustform approves: "),
            _ => (false, "trustform denies: "),
        };
        let v: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.ok == want)
            .map(|c| format!("{}: {}", c.rule, c.why))
            .collect();
        format!("{lead}{}", v.join("; "))
    }
}

/// `*` matches any run of characters; everything else itself.
fn matches(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// Whether `ip` is `allowed` (an address or a CIDR range).
fn ip_allowed(allowed: &str, ip: IpAddr) -> bool {
    match allowed.split_once('/') {
        None => allowed.parse::<IpAddr>() == Ok(ip),
        Some((net, bits)) => {
            let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
                return false;
            };
            let prefix = |a: &[u8], b: &[u8]| {
                let full = (bits / 8) as usize;
                let rest = bits % 8;
                a.len() == b.len()
                    && full <= a.len()
                    && a[..full] == b[..full]
                    && (rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0)
            };
            match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => bits <= 32 && prefix(&n.octets(), &i.octets()),
                (IpAddr::V6(n), IpAddr::V6(i)) => bits <= 128 && prefix(&n.octets(), &i.octets()),
                _ => false,
            }
        }
    }
}

/// A Node's names and addresses (`status.addresses`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAddresses {
    /// `Hostname` and `InternalDNS`/`ExternalDNS` entries.
    pub names: Vec<String>,
    /// `InternalIP` and `ExternalIP` entries.
    pub ips: Vec<IpAddr>,
}

/// The decision on a request whose `spec.request` is no PKCS#10 request (`why`): denied
/// under a policy for its signer, else left to its own approver.
pub fn unreadable(req: &Request, why: &str, policies: &[CsrPolicy]) -> Decision {
    Decision {
        name: req.name.clone(),
        signer: req.signer.clone(),
        requester: req.username.clone(),
        subject: String::new(),
        verdict: if policies.iter().any(|p| p.signer == req.signer) {
            Verdict::Deny
        } else {
            Verdict::Unmanaged
        },
        checks: vec![Check {
            rule: "signature",
            ok: false,
            why: format!("spec.request: {why}"),
        }],
    }
}

/// Decide on `req` (parsed as `asked`) under the policy for its signer. `nodes`: the
/// cluster's Nodes; `keys`: every public key in the cluster's requests and the subject
/// it was asked for.
pub fn decide(
    req: &Request,
    asked: &Asked,
    policies: &[CsrPolicy],
    nodes: &BTreeMap<String, NodeAddresses>,
    keys: &[(Fingerprint, String)],
) -> Decision {
    let mut checks = vec![];
    let mut check = |rule, ok, why: String| checks.push(Check { rule, ok, why });
    let policy = policies.iter().find(|p| p.signer == req.signer);
    let decision = |verdict, checks| Decision {
        name: req.name.clone(),
        signer: req.signer.clone(),
        requester: req.username.clone(),
        subject: asked.subject.clone(),
        verdict,
        checks,
    };
    let Some(p) = policy else {
        return decision(
            Verdict::Unmanaged,
            vec![Check {
                rule: "policy",
                ok: false,
                why: format!(
                    "no policy in trustform.yaml covers signer {}: left to its own approver",
                    req.signer
                ),
            }],
        );
    };
    // (1) The subject controls the private key that signed the request.
    check(
        "signature",
        asked.signature_ok,
        if asked.signature_ok {
            format!(
                "signed by the private key of the public key it carries ({})",
                asked.public_key.short()
            )
        } else {
            "its signature does not verify with the public key it carries: whoever made it does not hold that key".into()
        },
    );
    check(
        "readable",
        asked.unjudgeable.is_empty(),
        if asked.unjudgeable.is_empty() {
            "every name it asks for is one a rule judges".into()
        } else {
            format!(
                "it asks for {}, which no rule can judge",
                asked.unjudgeable.join(", ")
            )
        },
    );
    let other = keys
        .iter()
        .find(|(k, subject)| *k == asked.public_key && *subject != asked.subject);
    check(
        "key",
        other.is_none(),
        match other {
            None => "its public key is asked for no other subject".into(),
            Some((_, s)) => format!(
                "its public key {} is also asked for by {s}",
                asked.public_key.short()
            ),
        },
    );
    // (2) The subject is authorized to act in the requested context.
    let cn = asked.common_name.clone().unwrap_or_default();
    if p.node {
        let node = cn.strip_prefix("system:node:");
        match node {
            Some(n) => {
                let requester = format!("system:node:{n}");
                check(
                    "requester",
                    req.username == requester,
                    if req.username == requester {
                        format!("{} is node {n} itself", req.username)
                    } else {
                        format!(
                            "{} asks for node {n}'s certificate: only {requester} may",
                            req.username
                        )
                    },
                );
                let orgs_ok = asked.organizations == ["system:nodes"];
                check(
                    "subject",
                    orgs_ok,
                    if orgs_ok {
                        format!("{} is a node's subject", asked.subject)
                    } else {
                        format!(
                            "a node's subject has O=system:nodes alone, not [{}]",
                            asked.organizations.join(", ")
                        )
                    },
                );
                let addrs = nodes.get(n);
                let own = |d: &str| {
                    d.eq_ignore_ascii_case(n)
                        || addrs.is_some_and(|a| a.names.iter().any(|x| x.eq_ignore_ascii_case(d)))
                };
                let bad: Vec<String> = match addrs {
                    None => vec![format!("there is no Node {n}")],
                    Some(_) if asked.dns_names.is_empty() && asked.ips.is_empty() => {
                        vec!["a serving certificate names at least one DNS name or IP".into()]
                    }
                    Some(a) => asked
                        .dns_names
                        .iter()
                        .filter(|d| !own(d))
                        .map(|d| format!("{d} is not a name of Node {n}"))
                        .chain(
                            asked
                                .ips
                                .iter()
                                .filter(|ip| !a.ips.contains(ip))
                                .map(|ip| format!("{ip} is not an address of Node {n}")),
                        )
                        .collect(),
                };
                check(
                    "names",
                    bad.is_empty(),
                    if bad.is_empty() {
                        format!("every DNS name and IP is Node {n}'s")
                    } else {
                        let known = addrs.map_or(String::new(), |a| {
                            let mut v: Vec<String> = a.names.clone();
                            v.extend(a.ips.iter().map(IpAddr::to_string));
                            format!(" (its names and addresses: {})", v.join(", "))
                        });
                        format!("{}{known}", bad.join("; "))
                    },
                );
            }
            None => check(
                "subject",
                false,
                format!(
                    "{} is not a node's subject (CN=system:node:<node>)",
                    asked.subject
                ),
            ),
        }
    } else {
        let by_user = p.users.contains(&req.username);
        let by_group = req.groups.iter().find(|g| p.groups.contains(g));
        check(
            "requester",
            by_user || by_group.is_some(),
            match (by_user, by_group) {
                (true, _) => format!("user {} may request", req.username),
                (_, Some(g)) => format!("{} may request as a member of {g}", req.username),
                _ => format!(
                    "{} (groups {}) is none of the users or groups the policy allows",
                    req.username,
                    req.groups.join(", ")
                ),
            },
        );
        let cn_ok = !cn.is_empty() && p.common_names.iter().any(|c| matches(c, &cn));
        let bad_orgs: Vec<&String> = asked
            .organizations
            .iter()
            .filter(|o| !p.organizations.contains(o))
            .collect();
        check(
            "subject",
            cn_ok && bad_orgs.is_empty(),
            if cn.is_empty() {
                "the subject has no common name (the name it would authenticate as)".into()
            } else if !cn_ok {
                format!("CN={cn} is not an allowed common name")
            } else if !bad_orgs.is_empty() {
                format!(
                    "O={} is not an allowed organization",
                    bad_orgs
                        .iter()
                        .map(|o| o.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!("{} is allowed", asked.subject)
            },
        );
        let bad: Vec<String> = asked
            .dns_names
            .iter()
            .filter(|d| {
                d.contains('*')
                    || !p
                        .dns_names
                        .iter()
                        .any(|pat| matches(&pat.to_ascii_lowercase(), &d.to_ascii_lowercase()))
            })
            .map(|d| {
                if d.contains('*') {
                    format!("{d} is a wildcard name: a policy allows names, not wildcards")
                } else {
                    format!("{d} is not an allowed DNS name")
                }
            })
            .chain(
                asked
                    .ips
                    .iter()
                    .filter(|ip| !p.ips.iter().any(|a| ip_allowed(a, **ip)))
                    .map(|ip| format!("{ip} is not an allowed IP")),
            )
            .collect();
        check(
            "names",
            bad.is_empty(),
            if bad.is_empty() {
                "every DNS name and IP is allowed".into()
            } else {
                bad.join("; ")
            },
        );
    }
    let bad: Vec<&String> = req
        .usages
        .iter()
        .filter(|u| !p.usages.contains(u))
        .collect();
    check(
        "usages",
        bad.is_empty(),
        if bad.is_empty() {
            format!("[{}] allowed", req.usages.join(", "))
        } else {
            format!(
                "{} not allowed (allowed: {})",
                bad.iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.usages.join(", ")
            )
        },
    );
    if let Some(max) = p.max_duration.as_deref() {
        let limit = humantime::parse_duration(max.trim()).map_or(0, |d| d.as_secs() as i64);
        let (ok, why) = match req.expiration_seconds {
            None => (
                false,
                format!(
                    "it asks for the signer's default lifetime (no expirationSeconds); at most {max}"
                ),
            ),
            Some(s) if s > limit => (false, format!("{s} s is longer than {max}")),
            Some(s) => (true, format!("{s} s, at most {max}")),
        };
        check("lifetime", ok, why);
    }
    let verdict = if checks.iter().all(|c| c.ok) {
        Verdict::Approve
    } else {
        Verdict::Deny
    };
    decision(verdict, checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request for `cn`/`o` with these SANs, made with rcgen (DER).
    fn request(cn: &str, o: &str, sans: &[&str]) -> Vec<u8> {
        let key = crate::pki::issue::generate_key(crate::pki::KeyAlgorithm::EcdsaP256).unwrap();
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    fn req(name: &str, user: &str, der: Vec<u8>, usages: &[&str]) -> Request {
        Request {
            name: name.into(),
            signer: "kubernetes.io/kubelet-serving".into(),
            username: user.into(),
            groups: vec!["system:nodes".into()],
            usages: usages.iter().map(|u| u.to_string()).collect(),
            expiration_seconds: Some(3600),
            der,
            decided: None,
        }
    }

    fn node_policy() -> Vec<CsrPolicy> {
        vec![CsrPolicy {
            signer: "kubernetes.io/kubelet-serving".into(),
            node: true,
            usages: vec!["digital signature".into(), "server auth".into()],
            max_duration: Some("1d".into()),
            ..CsrPolicy::default()
        }]
    }

    fn nodes() -> BTreeMap<String, NodeAddresses> {
        BTreeMap::from([(
            "w-1".to_string(),
            NodeAddresses {
                names: vec!["w-1".into()],
                ips: vec!["10.0.0.1".parse().unwrap()],
            },
        )])
    }

    fn broken(d: &Decision) -> Vec<&'static str> {
        d.checks.iter().filter(|c| !c.ok).map(|c| c.rule).collect()
    }

    #[test]
    fn a_node_may_ask_for_its_own_names_only_and_each_broken_rule_is_named() {
        let usages = ["digital signature", "server auth"];
        let good = req(
            "a",
            "system:node:w-1",
            request("system:node:w-1", "system:nodes", &["w-1", "10.0.0.1"]),
            &usages,
        );
        let asked = parse(&good.der).unwrap();
        assert!(asked.signature_ok);
        assert_eq!(asked.dns_names, ["w-1"]);
        assert_eq!(asked.ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let d = decide(&good, &asked, &node_policy(), &nodes(), &[]);
        assert_eq!((d.verdict, broken(&d)), (Verdict::Approve, vec![]), "{d:?}");
        assert!(d.message().starts_with("trustform approves: signature: "));
        // Another node's requester; a foreign address; a usage; a second subject on the
        // same key; a lifetime; not a node's subject.
        let other = req("b", "system:node:w-2", good.der.clone(), &usages);
        let d = decide(&other, &asked, &node_policy(), &nodes(), &[]);
        assert_eq!((d.verdict, broken(&d)), (Verdict::Deny, vec!["requester"]));
        let ip = req(
            "c",
            "system:node:w-1",
            request("system:node:w-1", "system:nodes", &["10.9.9.9"]),
            &usages,
        );
        let d = decide(&ip, &parse(&ip.der).unwrap(), &node_policy(), &nodes(), &[]);
        assert_eq!(broken(&d), ["names"]);
        assert!(
            d.message().contains(
                "10.9.9.9 is not an address of Node w-1 (its names and addresses: w-1, 10.0.0.1)"
            ),
            "{}",
            d.message()
        );
        let usage = req("d", "system:node:w-1", good.der.clone(), &["client auth"]);
        assert_eq!(
            broken(&decide(&usage, &asked, &node_policy(), &nodes(), &[])),
            ["usages"]
        );
        let reused = [(asked.public_key.clone(), "CN=someone else".to_string())];
        assert_eq!(
            broken(&decide(&good, &asked, &node_policy(), &nodes(), &reused)),
            ["key"]
        );
        let mut long = good.clone();
        long.expiration_seconds = Some(2 * 86_400);
        assert_eq!(
            broken(&decide(&long, &asked, &node_policy(), &nodes(), &[])),
            ["lifetime"]
        );
        let admin = req(
            "e",
            "system:node:w-1",
            request("admin", "system:masters", &[]),
            &usages,
        );
        assert_eq!(
            broken(&decide(
                &admin,
                &parse(&admin.der).unwrap(),
                &node_policy(),
                &nodes(),
                &[]
            )),
            ["subject"]
        );
        // A signer no policy covers is left alone.
        let mut foreign = good.clone();
        foreign.signer = "example.com/serving".into();
        assert_eq!(
            decide(&foreign, &asked, &node_policy(), &nodes(), &[]).verdict,
            Verdict::Unmanaged
        );
        // A request whose signature is not its key's.
        let mut der = good.der.clone();
        let n = der.len() - 3;
        der[n] ^= 0x5a;
        assert!(!parse(&der).unwrap().signature_ok);
    }

    #[test]
    fn what_no_rule_can_judge_is_denied() {
        // Two common names: the API server would read the last.
        let key = crate::pki::issue::generate_key(crate::pki::KeyAlgorithm::EcdsaP256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["*.example.com".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "team-a");
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        let mut der2 = der.clone();
        let asked = parse(&der).unwrap();
        assert!(asked.unjudgeable.is_empty());
        let policy = vec![CsrPolicy {
            signer: "example.com/serving".into(),
            users: vec!["alice".into()],
            common_names: vec!["team-*".into()],
            dns_names: vec!["*.example.com".into()],
            usages: vec!["server auth".into()],
            ..CsrPolicy::default()
        }];
        let mut r = req("w", "alice", der, &["server auth"]);
        r.signer = "example.com/serving".into();
        let d = decide(&r, &asked, &policy, &nodes(), &[]);
        assert_eq!(broken(&d), ["names"], "a wildcard name is not a name");
        assert!(d.message().contains("*.example.com is a wildcard name"));
        let mut two = asked.clone();
        two.unjudgeable
            .push("2 common names (the API server reads the last one)".into());
        assert!(broken(&decide(&r, &two, &policy, &nodes(), &[])).contains(&"readable"));
        der2.truncate(der2.len() / 2);
        assert!(parse(&der2).is_err());
    }

    #[test]
    fn patterns_and_ranges() {
        assert!(matches("team-*", "team-é") && !matches("team-*", "tëam-a"));
        assert!(matches("x*y*", "xy") && matches("a**", "a") && matches("*.*", "."));
        assert!(matches("*.svc.cluster.local", "web.ns.svc.cluster.local"));
        assert!(!matches("*.svc.cluster.local", "web.ns.svc.example.com"));
        assert!(matches("web", "web") && !matches("web", "webs"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_allowed("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!ip_allowed("10.0.0.0/8", ip("11.1.2.3")));
        assert!(ip_allowed("192.168.1.0/25", ip("192.168.1.127")));
        assert!(!ip_allowed("192.168.1.0/25", ip("192.168.1.128")));
        assert!(ip_allowed("192.0.2.24", ip("192.0.2.24")));
    }
}
