//! TLS contexts built from the files a configuration names. They are built
//! when the configuration is read (so `pglb check`, `-c` and a reload report
//! a bad certificate with its line, and a failed reload keeps the old
//! contexts), and rebuilt at every reload: sessions keep the context they
//! started with, new sessions get the new certificate.

use openssl::pkey::{PKey, Private};
use openssl::ssl::{AlpnError, Ssl, SslAcceptor, SslConnector, SslContextBuilder, SslMethod, SslOptions, SslVerifyMode};
use openssl::x509::X509;
use std::fmt;
use std::path::{Path, PathBuf};

/// HAProxy's `verify`: whether the peer's certificate is asked for and
/// checked. A server side knows only `none` and `required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    None,
    Optional,
    Required,
}

impl Verify {
    pub fn parse(word: &str) -> Option<Verify> {
        match word {
            "none" => Some(Verify::None),
            "optional" => Some(Verify::Optional),
            "required" => Some(Verify::Required),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read '{}': {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("'{}': {why}", path.display())]
    Pem { path: PathBuf, why: String },
    #[error("TLS setup failed: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// A certificate (then its chain), its key, and the bytes they were read from.
type Pair = (Vec<X509>, PKey<Private>, Vec<u8>);

/// A certificate chain and its key, as HAProxy reads `crt FILE`: one PEM
/// file with the certificate (then its chain) and the key, or the key
/// beside it in `FILE.key`, or for `NAME.crt` in `NAME.key` (a Kubernetes
/// TLS Secret's `tls.crt` and `tls.key`).
fn load_pair(path: &Path) -> Result<Pair, TlsError> {
    let pem = read(path)?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            why: "the private key is encrypted; pglb reads unencrypted keys only (decrypt it: openssl pkey -in FILE -out FILE.key, mode 0600)".into(),
        });
    }
    let chain = X509::stack_from_pem(&pem).map_err(|e| TlsError::Pem { path: path.to_path_buf(), why: format!("no PEM certificate in it ({e})") })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), why: "no PEM certificate in it".into() });
    }
    let mut bytes = pem.clone();
    let key = match PKey::private_key_from_pem(&pem) {
        Ok(k) => k,
        Err(_) => {
            let mut appended = path.as_os_str().to_owned();
            appended.push(".key");
            let mut candidates = vec![PathBuf::from(appended)];
            if path.extension().is_some_and(|e| e == "crt") {
                candidates.push(path.with_extension("key"));
            }
            let Some(key_path) = candidates.iter().find(|p| p.exists()).cloned() else {
                let names: Vec<String> = candidates.iter().map(|p| format!("'{}'", p.display())).collect();
                return Err(TlsError::Pem {
                    path: path.to_path_buf(),
                    why: format!("no private key in it, and no {} beside it", names.join(" or ")),
                });
            };
            let key_pem = read(&key_path)?;
            bytes.extend_from_slice(&key_pem);
            PKey::private_key_from_pem(&key_pem).map_err(|e| TlsError::Pem { path: key_path.clone(), why: format!("not a PEM private key ({e})") })?
        }
    };
    Ok((chain, key, bytes))
}

fn use_pair(b: &mut SslContextBuilder, path: &Path, digest: &mut Vec<u8>) -> Result<(), TlsError> {
    let (chain, key, bytes) = load_pair(path)?;
    b.set_certificate(&chain[0])?;
    for extra in &chain[1..] {
        b.add_extra_chain_cert(extra.clone())?;
    }
    b.set_private_key(&key)?;
    b.check_private_key()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), why: format!("the private key does not match the certificate ({e})") })?;
    digest.extend_from_slice(&openssl::sha::sha256(&bytes));
    Ok(())
}

/// Makes `ca_file`'s CAs (none without one) the only ones the peer's
/// certificate is checked against, as in HAProxy: a connector's default
/// store holds the system's CAs, and any public CA's certificate would pass
/// a chain-only check. Reads the file once; returns its CAs.
fn trust_only(b: &mut SslContextBuilder, ca_file: Option<&Path>, digest: &mut Vec<u8>) -> Result<Vec<X509>, TlsError> {
    let mut store = openssl::x509::store::X509StoreBuilder::new()?;
    let mut cas = Vec::new();
    if let Some(ca) = ca_file {
        let pem = read(ca)?;
        digest.extend_from_slice(&openssl::sha::sha256(&pem));
        cas = X509::stack_from_pem(&pem).map_err(|e| TlsError::Pem { path: ca.to_path_buf(), why: format!("not a PEM CA file ({e})") })?;
        if cas.is_empty() {
            return Err(TlsError::Pem { path: ca.to_path_buf(), why: "no PEM certificate in it".into() });
        }
        for c in &cas {
            store.add_cert(c.clone())?;
        }
    }
    b.set_cert_store(store.build());
    Ok(cas)
}

/// Options both sides share: a peer that closes without close_notify has
/// just closed (PostgreSQL clients often do), and idle sessions give their
/// read and write buffers back.
fn common(b: &mut SslContextBuilder) {
    b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
    b.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
}

/// What `bind ... ssl crt FILE [ca-file FILE] [verify none|optional|required]`
/// terminates clients' TLS with.
#[derive(Clone)]
pub struct Acceptor {
    pub crt: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub verify: Verify,
    /// SHA-256 of the files read: a reload that changes a certificate
    /// changes the configuration.
    digest: Vec<u8>,
    ctx: SslAcceptor,
}

impl Acceptor {
    /// Reads the files. `verify` other than `none` needs `ca_file`, the CAs
    /// that sign clients' certificates.
    pub fn load(crt: &Path, ca_file: Option<&Path>, verify: Verify) -> Result<Acceptor, TlsError> {
        // Mozilla's "intermediate" profile: TLS 1.2 and 1.3, what
        // PostgreSQL's own ssl_min_protocol_version allows by default.
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        common(&mut b);
        let mut digest = Vec::new();
        use_pair(&mut b, crt, &mut digest)?;
        // The CAs asked of clients are the ones trusted.
        for ca in trust_only(&mut b, ca_file, &mut digest)? {
            b.add_client_ca(&ca)?;
        }
        b.set_verify(match verify {
            Verify::None => SslVerifyMode::NONE,
            Verify::Optional => SslVerifyMode::PEER,
            Verify::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        });
        b.set_session_id_context(b"pglb")?;
        // PostgreSQL 17's rule: a client that offers ALPN must offer
        // `postgresql` (else a fatal alert); one that offers none may still
        // negotiate after an SSLRequest (direct TLS checks it afterwards).
        b.set_alpn_select_callback(|_, offered| openssl::ssl::select_next_proto(super::ALPN_POSTGRESQL, offered).ok_or(AlpnError::ALERT_FATAL));
        Ok(Acceptor { crt: crt.to_path_buf(), ca_file: ca_file.map(Path::to_path_buf), verify, digest, ctx: b.build() })
    }

    /// The state of one session's TLS.
    pub fn ssl(&self) -> Result<Ssl, openssl::error::ErrorStack> {
        Ssl::new(self.ctx.context())
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").field("crt", &self.crt).field("ca_file", &self.ca_file).field("verify", &self.verify).finish()
    }
}

impl Eq for Acceptor {}

impl PartialEq for Acceptor {
    fn eq(&self, other: &Self) -> bool {
        (&self.crt, &self.ca_file, self.verify, &self.digest) == (&other.crt, &other.ca_file, other.verify, &other.digest)
    }
}

/// What `server ... ssl [verify none|required] [ca-file FILE] [crt FILE]
/// [sni str(NAME)] [verifyhost NAME]` encrypts to the server with.
#[derive(Clone)]
pub struct Connector {
    pub verify: Verify,
    pub ca_file: Option<PathBuf>,
    /// A client certificate for the server (PostgreSQL's `cert` method).
    pub crt: Option<PathBuf>,
    /// Sent as SNI.
    pub sni: Option<String>,
    /// The name the server's certificate must carry (else the SNI's; else
    /// only the chain is checked, as in HAProxy).
    pub verifyhost: Option<String>,
    digest: Vec<u8>,
    ctx: SslConnector,
}

impl Connector {
    pub fn load(
        verify: Verify,
        ca_file: Option<&Path>,
        crt: Option<&Path>,
        sni: Option<String>,
        verifyhost: Option<String>,
    ) -> Result<Connector, TlsError> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        common(&mut b);
        b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))?;
        let mut digest = Vec::new();
        trust_only(&mut b, ca_file, &mut digest)?;
        if let Some(crt) = crt {
            use_pair(&mut b, crt, &mut digest)?;
        }
        b.set_verify(if verify == Verify::None { SslVerifyMode::NONE } else { SslVerifyMode::PEER });
        Ok(Connector { verify, ca_file: ca_file.map(Path::to_path_buf), crt: crt.map(Path::to_path_buf), sni, verifyhost, digest, ctx: b.build() })
    }

    /// The name checked against the server's certificate, if any.
    fn host(&self) -> Option<&str> {
        if self.verify == Verify::None {
            return None;
        }
        self.verifyhost.as_deref().or(self.sni.as_deref())
    }

    /// The state of one connection's TLS.
    pub fn ssl(&self) -> Result<Ssl, openssl::error::ErrorStack> {
        let mut cfg = self.ctx.configure()?;
        cfg.set_use_server_name_indication(false);
        cfg.set_verify_hostname(false);
        let mut ssl = cfg.into_ssl("")?;
        self.name(&mut ssl)?;
        Ok(ssl)
    }

    /// Sets SNI and the name to verify on one connection's TLS.
    fn name(&self, ssl: &mut openssl::ssl::SslRef) -> Result<(), openssl::error::ErrorStack> {
        if let Some(sni) = &self.sni {
            ssl.set_hostname(sni)?;
        }
        if let Some(host) = self.host() {
            let param = ssl.param_mut();
            param.set_hostflags(openssl::x509::verify::X509CheckFlags::NO_PARTIAL_WILDCARDS);
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) => param.set_ip(ip)?,
                Err(_) => param.set_host(host)?,
            }
        }
        Ok(())
    }

    /// The same TLS for health checks (tokio-postgres negotiates it).
    pub fn for_checks(&self) -> postgres_openssl::MakeTlsConnector {
        let mut make = postgres_openssl::MakeTlsConnector::new(self.ctx.clone());
        let this = self.clone();
        make.set_callback(move |cfg, _domain| {
            // The check connects to an address; names come from the server line.
            cfg.set_use_server_name_indication(false);
            cfg.set_verify_hostname(false);
            this.name(cfg)
        });
        make
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .field("crt", &self.crt)
            .field("sni", &self.sni)
            .field("verifyhost", &self.verifyhost)
            .finish()
    }
}

impl PartialEq for Connector {
    fn eq(&self, other: &Self) -> bool {
        self.same_settings(other) && self.digest == other.digest
    }
}

impl Connector {
    /// The same words on the server line, whatever the files hold now: a
    /// renewed certificate is not a changed server (a reload keeps its
    /// state and sessions; new connections use the new files).
    pub fn same_settings(&self, other: &Self) -> bool {
        (self.verify, &self.ca_file, &self.crt, &self.sni, &self.verifyhost)
            == (other.verify, &other.ca_file, &other.crt, &other.sni, &other.verifyhost)
    }
}
