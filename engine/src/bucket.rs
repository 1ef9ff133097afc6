//! The bucket: object storage holding one directory per block, configured with Thanos's objstore
//! YAML and implemented with `object_store`.
//!
//! A directory `<ULID>/` is a *complete* block when it holds `meta.json` and no
//! `deletion-mark.json`; a directory with files but no `meta.json` is a *partial* upload (ignored by
//! readers, removed by cleanup).
//!
//! ```yaml
//! type: FILESYSTEM            # or S3
//! config:
//!   directory: /var/strata    # S3: bucket, endpoint, region, access_key, secret_key, insecure, ...
//! ```
//!
//! The YAML is parsed (strictly, as Thanos does) in `objstore.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::meta::{BlockMeta, DELETION_MARK_FILE, DeletionMark, META_FILE, NO_COMPACT_MARK_FILE, NoCompactMark};
use crate::objstore::{self, Kind, S3Config};

/// Object storage holding blocks.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    desc: String,
    id: u64,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("desc", &self.desc).finish()
    }
}

/// What a block directory holds, from one listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DirState {
    has_meta: bool,
    has_deletion_mark: bool,
    has_no_compact_mark: bool,
}

impl Bucket {
    /// Wraps an existing store; `desc` describes it in logs.
    pub fn from_store(store: Arc<dyn ObjectStore>, desc: impl Into<String>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Bucket { store, desc: desc.into(), id }
    }

    /// A bucket on a local directory, created when missing.
    pub fn local(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::object_store("open", dir.display(), e))?
            .with_automatic_cleanup(true);
        Ok(Self::from_store(Arc::new(store), format!("file {}", dir.display())))
    }

    /// A bucket from a Thanos objstore YAML file.
    pub fn from_config_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        Self::from_yaml_at(&text, path)
    }

    /// A bucket from Thanos objstore YAML text.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let yaml = format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", dir.path().display());
    /// let b = engine::bucket::Bucket::from_yaml(&yaml).unwrap();
    /// assert!(format!("{b:?}").contains("file"));
    /// assert!(engine::bucket::Bucket::from_yaml("type: GCS\nconfig: {}").unwrap_err().to_string().contains("GCS"));
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self> {
        Self::from_yaml_at(text, Path::new("<inline>"))
    }

    fn from_yaml_at(text: &str, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadObjstoreConfig { path: path.to_path_buf(), reason };
        let cfg = objstore::parse(text).map_err(bad)?;
        let bucket = match cfg.kind {
            Kind::Filesystem(fs) => Self::local(PathBuf::from(fs.directory))?,
            Kind::S3(s3) => Self::s3(&s3).map_err(bad)?,
        };
        if cfg.prefix.is_empty() {
            Ok(bucket)
        } else {
            let p = ObjPath::from(cfg.prefix.as_str());
            let desc = format!("{} prefix {}", bucket.desc, p);
            Ok(Self::from_store(Arc::new(object_store::prefix::PrefixStore::new(bucket.store, p)), desc))
        }
    }

    fn s3(c: &S3Config) -> std::result::Result<Self, String> {
        let (store, desc) = Self::s3_builder(c)?;
        let store = store.build().map_err(|e| format!("S3 bucket {:?} at {desc}: {e}", c.bucket))?;
        Ok(Self::from_store(Arc::new(store), format!("s3 {} {}", desc, c.bucket)))
    }

    /// The object_store builder for an S3 config, and the endpoint as the config names it.
    fn s3_builder(c: &S3Config) -> std::result::Result<(AmazonS3Builder, String), String> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&c.bucket);
        let endpoint = if c.endpoint.is_empty() { "s3.amazonaws.com".to_string() } else { c.endpoint.clone() };
        let aws = endpoint.contains("amazonaws.com");
        let url = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            endpoint.clone()
        } else if c.insecure {
            format!("http://{endpoint}")
        } else {
            format!("https://{endpoint}")
        };
        if !aws || c.insecure {
            b = b.with_endpoint(url.trim_end_matches('/'));
        }
        b = b.with_allow_http(c.insecure || url.starts_with("http://"));
        if c.skip_tls_verify() {
            b = b.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::AllowInvalidCertificates), "true");
        }
        // Thanos (minio-go) uses virtual-hosted style for AWS and path style for other endpoints.
        let virtual_host = match c.bucket_lookup_type.as_str() {
            "path" => false,
            "virtual-hosted" => true,
            _ => aws,
        };
        b = b.with_virtual_hosted_style_request(virtual_host);
        let region = if c.region.is_empty() { "us-east-1" } else { c.region.as_str() };
        b = b.with_region(region);
        if let Some(url) = dualstack_endpoint(c, &endpoint, region, virtual_host) {
            b = b.with_endpoint(url);
        }
        if c.send_content_md5 {
            // object_store cannot send Content-MD5; it sends an x-amz-checksum-sha256 that S3
            // verifies in its place (and that Object Lock buckets accept as well).
            b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        }
        if !c.access_key.is_empty() {
            b = b.with_access_key_id(&c.access_key).with_secret_access_key(&c.secret_key);
        }
        if !c.session_token.is_empty() {
            b = b.with_token(&c.session_token);
        }
        Ok((b, endpoint))
    }

    /// The underlying object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A URL (`strata-bucket-<n>://data/`) unique to this bucket value in this process, under which
    /// it can be registered with a DataFusion runtime.
    pub fn object_store_url(&self) -> String {
        format!("strata-bucket-{}://data/", self.id)
    }

    /// Human-readable description (type and location).
    pub fn describe(&self) -> &str {
        &self.desc
    }

    /// Path of a file of a block: `<ulid>/<name>`.
    pub fn block_path(ulid: &str, name: &str) -> ObjPath {
        ObjPath::from(format!("{ulid}/{name}"))
    }

    async fn dir_states(&self) -> Result<BTreeMap<String, DirState>> {
        let objs: Vec<ObjectMeta> =
            self.store.list(None).try_collect().await.map_err(|e| Error::object_store("list", "/", e))?;
        let mut out: BTreeMap<String, DirState> = BTreeMap::new();
        for o in objs {
            let mut parts = o.location.parts();
            let (Some(dir), Some(file)) = (parts.next(), parts.next()) else { continue };
            if ulid::Ulid::from_string(dir.as_ref()).is_err() {
                continue;
            }
            let st = out.entry(dir.as_ref().to_string()).or_default();
            if parts.next().is_none() {
                match file.as_ref() {
                    META_FILE => st.has_meta = true,
                    DELETION_MARK_FILE => st.has_deletion_mark = true,
                    NO_COMPACT_MARK_FILE => st.has_no_compact_mark = true,
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// ULIDs of complete blocks (with `meta.json`, without `deletion-mark.json`), sorted.
    pub async fn list_blocks(&self) -> Result<Vec<String>> {
        Ok(self
            .dir_states()
            .await?
            .into_iter()
            .filter(|(_, s)| s.has_meta && !s.has_deletion_mark)
            .map(|(u, _)| u)
            .collect())
    }

    /// ULIDs of block directories without `meta.json` (partial or aborted uploads), sorted.
    pub async fn list_partial_blocks(&self) -> Result<Vec<String>> {
        Ok(self.dir_states().await?.into_iter().filter(|(_, s)| !s.has_meta).map(|(u, _)| u).collect())
    }

    /// ULIDs of blocks carrying a deletion mark, sorted.
    pub async fn list_marked_for_deletion(&self) -> Result<Vec<String>> {
        Ok(self.dir_states().await?.into_iter().filter(|(_, s)| s.has_deletion_mark).map(|(u, _)| u).collect())
    }

    /// Reads and parses a block's `meta.json`.
    pub async fn read_meta(&self, ulid: &str) -> Result<BlockMeta> {
        let p = Self::block_path(ulid, META_FILE);
        let bytes = self.get(&p).await?;
        let meta = BlockMeta::parse(&bytes, p.as_ref())?;
        if meta.ulid != ulid {
            return Err(Error::BadMeta {
                path: p.to_string(),
                reason: format!("ulid {:?} differs from the directory name", meta.ulid),
            });
        }
        Ok(meta)
    }

    /// Writes an object in one request.
    pub async fn put(&self, path: &ObjPath, bytes: Bytes) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes)).await.map_err(|e| Error::object_store("put", path, e))?;
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &ObjPath) -> Result<Bytes> {
        let r = self.store.get(path).await.map_err(|e| Error::object_store("get", path, e))?;
        r.bytes().await.map_err(|e| Error::object_store("get", path, e))
    }

    /// Size and version of an object.
    pub async fn head(&self, path: &ObjPath) -> Result<ObjectMeta> {
        self.store.head(path).await.map_err(|e| Error::object_store("head", path, e))
    }

    /// True when the object exists.
    pub async fn exists(&self, path: &ObjPath) -> Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::object_store("head", path, e)),
        }
    }

    /// Deletes one object; a missing object is not an error.
    pub async fn delete(&self, path: &ObjPath) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::object_store("delete", path, e)),
        }
    }

    /// Uploads `deletion-mark.json` for block `ulid` (Thanos's format, `deletion_time` now): the
    /// block stops being listed by [`Bucket::list_blocks`]. An existing mark is left as it is.
    pub async fn mark_for_deletion(&self, ulid: &str, details: &str) -> Result<()> {
        let path = Self::block_path(ulid, DELETION_MARK_FILE);
        if self.exists(&path).await? {
            return Ok(());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mark = crate::meta::DeletionMark {
            id: ulid.to_string(),
            details: details.to_string(),
            deletion_time: now,
            version: 1,
        };
        let bytes = serde_json::to_vec_pretty(&mark).unwrap_or_default();
        self.put(&path, bytes.into()).await
    }

    /// Deletes every object of a block directory as Thanos does: `meta.json` first (the block stops
    /// being visible before its data goes), `deletion-mark.json` last (until then an interrupted
    /// deletion is still known as one).
    pub async fn delete_block(&self, ulid: &str) -> Result<()> {
        let dir = ObjPath::from(ulid);
        let objs: Vec<ObjectMeta> =
            self.store.list(Some(&dir)).try_collect().await.map_err(|e| Error::object_store("list", &dir, e))?;
        let meta = Self::block_path(ulid, META_FILE);
        let mark = Self::block_path(ulid, DELETION_MARK_FILE);
        if objs.iter().any(|o| o.location == meta) {
            self.delete(&meta).await?;
        }
        for o in objs.iter().filter(|o| o.location != meta && o.location != mark) {
            self.delete(&o.location).await?;
        }
        if objs.iter().any(|o| o.location == mark) {
            self.delete(&mark).await?;
        }
        Ok(())
    }

    /// ULIDs of block directories carrying `no-compact-mark.json`, sorted.
    pub async fn list_no_compact_marked(&self) -> Result<Vec<String>> {
        Ok(self.dir_states().await?.into_iter().filter(|(_, s)| s.has_no_compact_mark).map(|(u, _)| u).collect())
    }

    /// Reads and parses a block's `deletion-mark.json`.
    pub async fn read_deletion_mark(&self, ulid: &str) -> Result<DeletionMark> {
        let p = Self::block_path(ulid, DELETION_MARK_FILE);
        let bytes = self.get(&p).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadMeta { path: p.to_string(), reason: e.to_string() })
    }

    /// Uploads `no-compact-mark.json` for block `ulid` (Thanos's format, `no_compact_time` now):
    /// compactors leave the block alone. An existing mark is left as it is.
    pub async fn mark_no_compact(&self, ulid: &str, reason: &str, details: &str) -> Result<()> {
        let path = Self::block_path(ulid, NO_COMPACT_MARK_FILE);
        if self.exists(&path).await? {
            return Ok(());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mark = NoCompactMark {
            id: ulid.to_string(),
            version: 1,
            details: details.to_string(),
            no_compact_time: now,
            reason: reason.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&mark).unwrap_or_default();
        self.put(&path, bytes.into()).await
    }

    /// The newest modification time (Unix ms) of the objects in a block directory; `None` when the
    /// directory is empty or the store keeps no times.
    pub async fn newest_modification_ms(&self, ulid: &str) -> Result<Option<i64>> {
        let dir = ObjPath::from(ulid);
        let objs: Vec<ObjectMeta> =
            self.store.list(Some(&dir)).try_collect().await.map_err(|e| Error::object_store("list", &dir, e))?;
        Ok(objs.iter().map(|o| o.last_modified.timestamp_millis()).max())
    }
}

/// The dual-stack (IPv4 + IPv6) endpoint Thanos (minio-go) talks to for an AWS S3 endpoint unless
/// `disable_dualstack` is set: `s3.dualstack.<region>.amazonaws.com` (`.com.cn` in China), with the
/// bucket as a host prefix in virtual-hosted style. Other endpoints are used as given.
fn dualstack_endpoint(c: &S3Config, endpoint: &str, region: &str, virtual_host: bool) -> Option<String> {
    let host = endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let aws = host == "s3.amazonaws.com" || (host.starts_with("s3.") && host.contains(".amazonaws.com"));
    if c.disable_dualstack || c.insecure || !aws || host.contains(".dualstack.") {
        return None;
    }
    let suffix = if host.ends_with(".amazonaws.com.cn") { "amazonaws.com.cn" } else { "amazonaws.com" };
    let host = format!("s3.dualstack.{region}.{suffix}");
    Some(if virtual_host { format!("https://{}.{host}", c.bucket) } else { format!("https://{host}") })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A moto S3 server on a free loopback port; killed on drop.
    #[derive(Debug)]
    pub(crate) struct Moto {
        child: tokio::process::Child,
        pub(crate) port: u16,
    }

    impl Moto {
        /// Starts moto_server and creates `bucket`. Returns None (after a notice) when moto_server
        /// is not installed and CI is not set; panics under CI=true.
        pub(crate) async fn start(bucket: &str) -> Option<Moto> {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = tokio::process::Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("moto_server is required under CI=true but cannot start: {e}");
                    }
                    eprintln!("NOTICE: moto_server not available ({e}); skipping S3 test");
                    return None;
                }
            };
            let moto = Moto { child, port };
            for _ in 0..200 {
                if let Ok(status) = http_put(port, &format!("/{bucket}")).await {
                    assert!(status == 200 || status == 409, "creating bucket {bucket}: HTTP {status}");
                    return Some(moto);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("moto_server on port {port} did not answer");
        }

        pub(crate) fn yaml(&self, bucket: &str) -> String {
            format!(
                "type: S3\nconfig:\n  bucket: {bucket}\n  endpoint: 127.0.0.1:{}\n  region: us-east-1\n  access_key: test\n  secret_key: test\n  insecure: true\n",
                self.port
            )
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.start_kill();
        }
    }

    async fn http_put(port: u16, path: &str) -> std::io::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req =
            format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer {text:?}")))
    }

    async fn exercise(b: &Bucket) {
        let u1 = "01HZZZZZZZZZZZZZZZZZZZZZZ1";
        let u2 = "01HZZZZZZZZZZZZZZZZZZZZZZ2";
        let u3 = "01HZZZZZZZZZZZZZZZZZZZZZZ3";
        let meta = |u: &str| format!(r#"{{"ulid":"{u}","minTime":0,"maxTime":10,"version":1}}"#);
        for u in [u1, u2, u3] {
            b.put(&Bucket::block_path(u, "samples.parquet"), Bytes::from_static(b"x")).await.unwrap();
        }
        b.put(&Bucket::block_path(u1, META_FILE), Bytes::from(meta(u1))).await.unwrap();
        b.put(&Bucket::block_path(u3, META_FILE), Bytes::from(meta(u3))).await.unwrap();
        b.put(&Bucket::block_path(u3, DELETION_MARK_FILE), Bytes::from_static(b"{}")).await.unwrap();
        b.put(&ObjPath::from("debug/notablock"), Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(b.list_blocks().await.unwrap(), vec![u1.to_string()]);
        assert_eq!(b.list_partial_blocks().await.unwrap(), vec![u2.to_string()]);
        assert_eq!(b.list_marked_for_deletion().await.unwrap(), vec![u3.to_string()]);
        assert_eq!(b.read_meta(u1).await.unwrap().max_time, 10);
        assert!(b.read_meta(u2).await.is_err());
        b.delete_block(u2).await.unwrap();
        assert!(b.list_partial_blocks().await.unwrap().is_empty());
        assert!(!b.exists(&Bucket::block_path(u2, "samples.parquet")).await.unwrap());
        assert_eq!(b.get(&Bucket::block_path(u1, "samples.parquet")).await.unwrap().as_ref(), b"x");
    }

    #[tokio::test]
    async fn marks_in_thanos_format_and_deletion_order() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let u = "01HZZZZZZZZZZZZZZZZZZZZZZ1";
        b.put(&Bucket::block_path(u, "samples.parquet"), Bytes::from_static(b"x")).await.unwrap();
        b.put(
            &Bucket::block_path(u, META_FILE),
            Bytes::from(format!(r#"{{"ulid":"{u}","minTime":0,"maxTime":10,"version":1}}"#)),
        )
        .await
        .unwrap();
        assert!(b.list_no_compact_marked().await.unwrap().is_empty());
        b.mark_no_compact(u, "manual", "keep it").await.unwrap();
        assert_eq!(b.list_no_compact_marked().await.unwrap(), vec![u.to_string()]);
        assert_eq!(b.list_blocks().await.unwrap(), vec![u.to_string()], "a no-compact mark keeps the block served");
        let v: serde_json::Value =
            serde_json::from_slice(&b.get(&Bucket::block_path(u, NO_COMPACT_MARK_FILE)).await.unwrap()).unwrap();
        assert_eq!((v["id"].as_str(), v["version"].as_i64(), v["reason"].as_str()), (Some(u), Some(1), Some("manual")));
        assert_eq!(v["details"].as_str(), Some("keep it"));
        assert!(v["no_compact_time"].as_i64().unwrap() > 1_700_000_000);

        b.mark_for_deletion(u, "test").await.unwrap();
        let m = b.read_deletion_mark(u).await.unwrap();
        assert_eq!((m.id.as_str(), m.version, m.details.as_str()), (u, 1, "test"));
        let first = m.deletion_time;
        b.mark_for_deletion(u, "again").await.unwrap();
        assert_eq!(b.read_deletion_mark(u).await.unwrap().details, "test", "an existing mark stays");
        assert!(first > 1_700_000_000);
        assert!(b.list_blocks().await.unwrap().is_empty());
        let newest = b.newest_modification_ms(u).await.unwrap().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((now - newest).abs() < 60_000, "{now} vs {newest}");
        assert_eq!(b.newest_modification_ms("01HZZZZZZZZZZZZZZZZZZZZZZ9").await.unwrap(), None);

        b.delete_block(u).await.unwrap();
        assert!(b.list_marked_for_deletion().await.unwrap().is_empty());
        assert!(b.list_partial_blocks().await.unwrap().is_empty());
    }

    #[test]
    fn s3_dualstack_and_checksum_follow_the_config() {
        use object_store::aws::AmazonS3ConfigKey as K;
        let cfg = |extra: &str| -> (Option<String>, Option<String>) {
            let yaml = format!("type: S3\nconfig:\n  bucket: b1\n  region: eu-west-1\n{extra}");
            let crate::objstore::Kind::S3(c) = crate::objstore::parse(&yaml).unwrap().kind else { panic!("not S3") };
            let (b, _) = Bucket::s3_builder(&c).unwrap();
            (b.get_config_value(&K::Endpoint), b.get_config_value(&K::Checksum))
        };
        // Thanos's defaults on AWS: dual-stack endpoint (virtual-hosted), integrity checksum sent.
        let (endpoint, checksum) = cfg("  endpoint: s3.eu-west-1.amazonaws.com\n");
        assert_eq!(endpoint.as_deref(), Some("https://b1.s3.dualstack.eu-west-1.amazonaws.com"));
        assert_eq!(checksum.as_deref(), Some("sha256"));
        let (endpoint, _) = cfg("  endpoint: s3.amazonaws.com\n  bucket_lookup_type: path\n");
        assert_eq!(endpoint.as_deref(), Some("https://s3.dualstack.eu-west-1.amazonaws.com"));
        // Turned off: object_store's own regional endpoint, no checksum.
        let (endpoint, checksum) =
            cfg("  endpoint: s3.eu-west-1.amazonaws.com\n  disable_dualstack: true\n  send_content_md5: false\n");
        assert_eq!((endpoint, checksum), (None, None));
        // Other endpoints are used as given.
        let (endpoint, _) = cfg("  endpoint: minio.local:9000\n");
        assert_eq!(endpoint.as_deref(), Some("https://minio.local:9000"));
    }

    #[tokio::test]
    async fn filesystem_bucket_lists_complete_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("nested/bucket");
        let cfg = dir.path().join("objstore.yml");
        std::fs::write(&cfg, format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", sub.display())).unwrap();
        let b = Bucket::from_config_file(&cfg).unwrap();
        exercise(&b).await;
        assert!(sub.join("01HZZZZZZZZZZZZZZZZZZZZZZ1/meta.json").exists());
    }

    #[tokio::test]
    async fn prefix_puts_blocks_under_a_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("type: FILESYSTEM\nconfig:\n  directory: {}\nprefix: tenant-a/\n", dir.path().display());
        let b = Bucket::from_yaml(&yaml).unwrap();
        exercise(&b).await;
        assert!(dir.path().join("tenant-a/01HZZZZZZZZZZZZZZZZZZZZZZ1/meta.json").exists());
        assert!(Bucket::local(dir.path()).unwrap().list_blocks().await.unwrap().is_empty());
    }

    #[test]
    fn rejects_unsupported_types_naming_them() {
        for t in ["GCS", "AZURE", "COS"] {
            let e = Bucket::from_yaml(&format!("type: {t}\nconfig: {{bucket: x}}\n")).unwrap_err().to_string();
            assert!(e.contains(t) && e.contains("not supported"), "{e}");
        }
        let e = Bucket::from_yaml("type: S3\nconfig: {endpoint: x}\n").unwrap_err().to_string();
        assert!(e.contains("bucket"), "{e}");
        let e = Bucket::from_yaml("type: FILESYSTEM\nconfig: {}\n").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
    }

    #[tokio::test]
    async fn s3_bucket_against_moto() {
        let Some(moto) = Moto::start("strata-bucket-test").await else { return };
        let b = Bucket::from_yaml(&moto.yaml("strata-bucket-test")).unwrap();
        exercise(&b).await;
    }
}
