//! A development CA and the certificates the services and a client present, made with
//! rcgen; for the demo and the TLS tests, never for production.
//!
//! Each identity is written Kubernetes-Secret style into its own directory
//! (`tls.crt`, `tls.key`, `ca.crt`), which is what the services watch.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The SPIFFE-style trust domain of the development identities.
pub const TRUST_DOMAIN: &str = "execbridge.local";

/// The identities `make certs` issues: the three services and the Python orchestrator.
pub const DEV_IDENTITIES: &[&str] = &["gateway", "executor", "marketdata", "orchestrator"];

/// A certificate authority that can issue leaf certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Subject common name.
    pub common_name: String,
    /// DNS names and IP addresses (IPs are recognised).
    pub names: Vec<String>,
    /// URI SANs (`spiffe://...`).
    pub uris: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Leaf {
    /// A leaf for `name` valid for loopback and `name` itself, with the URI SAN
    /// `spiffe://execbridge.local/<name>`, valid from an hour ago for `valid_for`.
    pub fn dev(name: &str, valid_for: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            common_name: name.to_owned(),
            names: vec![
                "localhost".into(),
                "127.0.0.1".into(),
                name.to_owned(),
                format!("execbridge-{name}"),
            ],
            uris: vec![spiffe_id(name)],
            not_before: now - Duration::from_secs(3600),
            not_after: now + valid_for,
        }
    }
}

/// The SPIFFE id of development identity `name`.
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/{name}")
}

impl Ca {
    /// A fresh self-signed CA named `name`, valid for `valid_for`.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn new(name: &str, valid_for: Duration) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "execbridge dev");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + valid_for).into();
        let key = KeyPair::generate()?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    /// The CA certificate, PEM-encoded.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues `leaf`, usable both as a server and as a client certificate (every service
    /// is both).
    ///
    /// # Errors
    /// When a name is not a valid SAN or signing fails.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(leaf.names.clone())?;
        for uri in &leaf.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = leaf.not_before.into();
        params.not_after = leaf.not_after.into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `issued` and the trusted CA bundle `ca_bundle_pem` into `dir` as `tls.crt`,
/// `tls.key` and `ca.crt`, each atomically (write then rename), key first readable only by
/// the owner.
///
/// # Errors
/// When a file cannot be written.
pub fn write_identity(dir: &Path, issued: &Issued, ca_bundle_pem: &str) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(&dir.join("ca.crt"), ca_bundle_pem.as_bytes())?;
    write_atomic(&dir.join("tls.key"), issued.key_pem.as_bytes())?;
    write_atomic(&dir.join("tls.crt"), issued.cert_pem.as_bytes())?;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a watcher never
/// reads half a file.
///
/// # Errors
/// When the file cannot be written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    #[cfg(unix)]
    if path.extension().is_some_and(|e| e == "key") {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    }
    fs::rename(tmp, path)
}
