//! Certificate issuance and the renewal decisions, free of Kubernetes: rcgen writes,
//! x509-parser reads, and every decision takes `now` so tests choose the time.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Why a certificate could not be issued or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// A PEM block in a Secret is not a certificate we can read.
    #[error("reading a certificate: {0}")]
    Parse(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// What the operator needs to know about a certificate it finds in a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject, RFC 4514 string.
    pub subject: String,
    /// Issuer, RFC 4514 string.
    pub issuer: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Clock skew allowance: certificates are valid from a little before `now`.
const BACKDATE: Duration = Duration::minutes(5);

/// A new self-signed CA valid for `lifetime` from `now`. Its common name carries the
/// issue time, so every rotation has a distinct subject and leaves can tell which CA
/// signed them.
///
/// # Errors
/// [`CertError::Issue`] if rcgen refuses.
pub fn issue_ca(now: OffsetDateTime, lifetime: Duration) -> Result<KeyedCert, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "execbridge");
    dn.push(
        DnType::CommonName,
        format!("execbridge-ca-{}", now.unix_timestamp()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A service certificate for `service` signed by `ca`, for server and client auth, with
/// `dns_names` and a SPIFFE-style URI SAN `spiffe://cluster.local/ns/<ns>/sa/<service>`
/// (the gateway takes principals from it).
///
/// # Errors
/// [`CertError`] if the CA cannot be loaded or rcgen refuses.
pub fn issue_leaf(
    ca: &KeyedCert,
    namespace: &str,
    service: &str,
    dns_names: &[String],
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<KeyedCert, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "execbridge");
    dn.push(DnType::CommonName, service);
    params.distinguished_name = dn;
    let spiffe = format!("spiffe://cluster.local/ns/{namespace}/sa/{service}");
    params
        .subject_alt_names
        .push(SanType::URI(spiffe.try_into()?));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads the first certificate of a PEM string.
///
/// # Errors
/// [`CertError::Parse`] if there is none or it is malformed.
pub fn inspect(pem: &str) -> Result<CertInfo, CertError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = block
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after,
    })
}

/// Splits a PEM bundle into its certificates (each a complete PEM block).
pub fn split_bundle(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .map(str::trim)
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| format!("{b}\n"))
        .collect()
}

/// Whether a certificate expiring at `not_after` must be renewed at `now`.
pub fn due(not_after: OffsetDateTime, renew_before: Duration, now: OffsetDateTime) -> bool {
    not_after - renew_before <= now
}

/// The CA state found in the CA Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaState {
    /// The CA that signs.
    pub current: KeyedCert,
    /// Every CA still trusted, newest first: `current`, then older ones that have not
    /// expired yet (the rotation overlap).
    pub trusted: Vec<String>,
}

impl CaState {
    /// The trust bundle the services mount as `ca.crt`.
    pub fn bundle(&self) -> String {
        self.trusted.concat()
    }
}

/// What to do with the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaPlan {
    /// Keep it; the trust bundle may have dropped expired CAs (`changed`).
    Keep {
        /// The state to store.
        state: CaState,
        /// Whether the stored Secret must be rewritten.
        changed: bool,
    },
    /// Issued the first CA.
    Created(CaState),
    /// Rotated: a new CA signs, the previous one stays trusted until it expires.
    Rotated(CaState),
}

impl CaPlan {
    /// The resulting state.
    pub fn state(&self) -> &CaState {
        match self {
            Self::Keep { state, .. } | Self::Created(state) | Self::Rotated(state) => state,
        }
    }
}

/// Decides about the CA given what the Secret holds (`None`: no Secret yet).
///
/// # Errors
/// [`CertError`] if a stored certificate cannot be read or a new one cannot be issued.
pub fn plan_ca(
    found: Option<CaState>,
    lifetime: Duration,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Result<CaPlan, CertError> {
    let Some(found) = found else {
        let ca = issue_ca(now, lifetime)?;
        let trusted = vec![ca.cert_pem.clone()];
        return Ok(CaPlan::Created(CaState {
            current: ca,
            trusted,
        }));
    };
    // Drop trusted CAs that have expired: nothing valid chains to them any more.
    let mut trusted = Vec::with_capacity(found.trusted.len() + 1);
    for pem in &found.trusted {
        if inspect(pem)?.not_after > now {
            trusted.push(pem.clone());
        }
    }
    let current = inspect(&found.current.cert_pem)?;
    if due(current.not_after, renew_before, now) {
        let ca = issue_ca(now, lifetime)?;
        trusted.retain(|p| *p != ca.cert_pem);
        trusted.insert(0, ca.cert_pem.clone());
        return Ok(CaPlan::Rotated(CaState {
            current: ca,
            trusted,
        }));
    }
    if !trusted.contains(&found.current.cert_pem) {
        trusted.insert(0, found.current.cert_pem.clone());
    }
    let changed = trusted != found.trusted;
    Ok(CaPlan::Keep {
        state: CaState {
            current: found.current,
            trusted,
        },
        changed,
    })
}

/// Why a service certificate is (re)issued, or `None` if it is fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafReason {
    /// No certificate yet.
    Missing,
    /// Within the renewal window.
    Expiring,
    /// Signed by a CA that no longer signs (after a CA rotation).
    NewCa,
    /// The stored certificate could not be read.
    Unreadable,
}

/// Decides whether the service certificate `found` (PEM) must be reissued.
pub fn plan_leaf(
    found: Option<&str>,
    ca: &CaState,
    renew_before: Duration,
    now: OffsetDateTime,
) -> Option<LeafReason> {
    let Some(pem) = found else {
        return Some(LeafReason::Missing);
    };
    let (Ok(leaf), Ok(ca)) = (inspect(pem), inspect(&ca.current.cert_pem)) else {
        return Some(LeafReason::Unreadable);
    };
    if leaf.issuer != ca.subject {
        Some(LeafReason::NewCa)
    } else if due(leaf.not_after, renew_before, now) {
        Some(LeafReason::Expiring)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
