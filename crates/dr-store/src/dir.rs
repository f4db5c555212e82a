//! The directory store: one file per object under `root`.
//!
//! - `put` writes `<file>.tmp-<random>`, fsyncs it, renames it into place and fsyncs the
//!   directory, so readers see the old or the new object.
//! - `put_if_absent` writes a temp file and hard-links it to the key, which fails atomically if
//!   the key exists.
//! - Multipart uploads append to `root/.dr-uploads/<upload_id>/data` (the target key is in
//!   `.../key`); `complete` fsyncs and renames the data into place.
//!
//! `list` skips `.dr-uploads` and `*.tmp-*` files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
#[cfg(test)]
use tokio::task::JoinSet;

use crate::location::{invalid, invalid_option, Backend};
use crate::{
    random_id, validate_key, validate_prefix, Location, MultipartUpload, ObjectMeta, ObjectStore,
    PartLimits, PendingUpload, StoreError,
};

const UPLOADS_DIR: &str = ".dr-uploads";
const TMP_MARKER: &str = ".tmp-";

/// `file:///ABSOLUTE/PATH`; no options.
pub(crate) const BACKEND: Backend = Backend {
    scheme: "file",
    url_form: "file:///absolute/path",
    top_level_keys: &[],
    parse: parse_location,
};

fn parse_location(url: &str, rest: &str, options: toml::Table) -> Result<Location, StoreError> {
    if let Some(key) = options.keys().next() {
        return Err(invalid_option(
            format!("file.{key}"),
            "is not an option of a directory repository",
            "remove [repository.file]: a file:// repository takes no options",
        ));
    }
    // file:///abs/path or file://localhost/abs/path; anything else has a host or is relative.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(invalid(
            url,
            "the path must be absolute (file:///abs/path has three slashes)",
        ));
    }
    let root = url::Url::parse(&format!("file://{path}"))
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .ok_or_else(|| invalid(url, "not a valid file path"))?;
    if !root.is_absolute() {
        return Err(invalid(url, "the path must be absolute"));
    }
    Ok(Location::Directory { root })
}

#[derive(Debug)]
pub(crate) struct DirStore {
    location: Location,
    root: PathBuf,
}

impl DirStore {
    pub(crate) async fn open(location: Location) -> Result<Self, StoreError> {
        let Location::Directory { root } = &location else {
            return Err(StoreError::InvalidLocation {
                url: location.to_string(),
                reason: "not a file:// location".to_owned(),
                hint: "use file:///absolute/path",
            });
        };
        let root = root.clone();
        let create = root.clone();
        blocking(move || {
            fs::create_dir_all(&create).map_err(|e| StoreError::io("create directory", &create, e))
        })
        .await?;
        Ok(DirStore { location, root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        if key == UPLOADS_DIR || key.starts_with(".dr-uploads/") {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "`.dr-uploads/` is reserved for multipart uploads",
            });
        }
        if key
            .rsplit('/')
            .next()
            .is_some_and(|name| name.contains(TMP_MARKER))
        {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "file names containing `.tmp-` are reserved for temporary files",
            });
        }
        Ok(self.root.join(key))
    }

    fn uploads(&self) -> PathBuf {
        self.root.join(UPLOADS_DIR)
    }
}

/// Run filesystem work off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::io(
            "run filesystem task",
            PathBuf::new(),
            io::Error::other(join.to_string()),
        )),
    }
}

/// The path names no file: nothing there, or a file where the path needs a directory (the key
/// `a/b/c` when `a/b` is an object). S3 answers both as a missing key.
fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{TMP_MARKER}{}", random_id()));
    path.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Create `path` exclusively and write `body` to it durably. Retries when a concurrent delete
/// pruned the freshly created parent directory.
fn write_new_file(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    let parent = parent_of(path);
    let vanished = |e: &StoreError| {
        matches!(e, StoreError::Io { action: "create", source, .. }
            if source.kind() == io::ErrorKind::NotFound)
    };
    let mut file = dr_retry::DIRECTORY_RACE.run_blocking("creating a file", vanished, || {
        fs::create_dir_all(parent).map_err(|e| StoreError::io("create directory", parent, e))?;
        File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StoreError::io("create", path, e))
    })?;
    let written = file.write_all(body).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(StoreError::io("write", path, e));
    }
    Ok(())
}

fn write_temp(path: &Path, body: &[u8]) -> Result<PathBuf, StoreError> {
    let tmp = tmp_path(path);
    write_new_file(&tmp, body)?;
    Ok(tmp)
}

/// Remove now-empty directories between `dir` and `root` (exclusive). Best effort.
fn prune_empty_dirs(root: &Path, mut dir: &Path) {
    while dir != root && dir.starts_with(root) {
        if fs::remove_dir(dir).is_err() {
            break;
        }
        dir = parent_of(dir);
    }
}

fn system_time_utc(t: io::Result<std::time::SystemTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.ok().map(chrono::DateTime::<chrono::Utc>::from)
}

fn meta_of(key: String, meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: meta.len(),
        last_modified: system_time_utc(meta.modified()),
    }
}

/// Walk `dir` (a directory under `root`), adding files whose key starts with `prefix`.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Missing (or deleted while we walk), or a file (a prefix below an object): nothing
        // under it.
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(StoreError::io("list directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list directory", dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(
                path = %path.display(),
                "skipping a file whose name is not UTF-8; it cannot be a dr object"
            );
            continue;
        };
        if dir == root && name == UPLOADS_DIR {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|e| StoreError::io("stat", &path, e))?;
        if file_type.is_dir() {
            walk(root, &path, prefix, out)?;
            continue;
        }
        if name.contains(TMP_MARKER) {
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let key = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if !key.starts_with(prefix) {
            continue;
        }
        // Follows symlinks, so a linked file lists with its target's size.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => out.push(meta_of(key, &meta)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("stat", &path, e)),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for DirStore {
    fn location(&self) -> &Location {
        &self.location
    }

    /// A directory takes parts of any size; sized as for S3, memory stays bounded the same
    /// way and a repository copied to a bucket was written as it would have been there.
    fn part_limits(&self) -> PartLimits {
        PartLimits::S3
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        blocking(move || {
            let tmp = write_temp(&path, &body)?;
            if let Err(e) = fs::rename(&tmp, &path) {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::io("rename into place", &path, e));
            }
            sync_dir(parent_of(&path))
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        blocking(move || {
            if path.exists() {
                return Ok(false);
            }
            let tmp = write_temp(&path, &body)?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                // Filesystems without hard links: an exclusive create is still atomic against
                // other writers, only readers may see a partial file for a moment.
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    match write_new_file(&path, &body) {
                        Ok(()) => {}
                        Err(StoreError::Io { source, .. })
                            if source.kind() == io::ErrorKind::AlreadyExists =>
                        {
                            return Ok(false)
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(StoreError::io("link into place", &path, e)),
            }
            sync_dir(parent_of(&path))?;
            Ok(true)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if absent(&e) || path.is_dir() => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    async fn get_reader(
        &self,
        key: &str,
    ) -> Result<(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>), StoreError> {
        let path = self.path(key)?;
        let not_found = || StoreError::NotFound {
            key: key.to_owned(),
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if absent(&e) => return Err(not_found()),
            Err(e) => return Err(StoreError::io("open", &path, e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| StoreError::io("stat", &path, e))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((meta.len(), Box::new(file)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta_of(key.to_owned(), &meta))),
            Ok(_) => Ok(None),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io("stat", &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        // Walk only the deepest directory the prefix names, then filter by string prefix.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &start, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let root = self.root.clone();
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                // A directory is no object: a key that is only a prefix of others is missing.
                Err(e) if absent(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(()),
                Err(e) => return Err(StoreError::io("delete", &path, e)),
            }
            let parent = parent_of(&path);
            sync_dir(parent)?;
            prune_empty_dirs(&root, parent);
            Ok(())
        })
        .await
    }

    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        let target = self.path(key)?;
        let upload_id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            random_id()
        );
        let dir = self.uploads().join(&upload_id);
        let data = dir.join("data");
        {
            let (dir, key) = (dir.clone(), key.to_owned());
            blocking(move || {
                fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::io("create directory", &dir, e))?;
                write_new_file(&dir.join("key"), key.as_bytes())
            })
            .await?;
        }
        let file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&data)
            .await
            .map_err(|e| StoreError::io("create", &data, e))?;
        Ok(Box::new(DirUpload {
            key: key.to_owned(),
            target,
            dir,
            data,
            file: Some(file),
            size: 0,
        }))
    }

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        validate_prefix(prefix)?;
        let uploads = self.uploads();
        let prefix = prefix.to_owned();
        blocking(move || {
            let entries = match fs::read_dir(&uploads) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::io("list directory", &uploads, e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io("list directory", &uploads, e))?;
                let Some(upload_id) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let key_file = entry.path().join("key");
                let (key, initiated) = match fs::read_to_string(&key_file) {
                    Ok(key) => (
                        key,
                        system_time_utc(fs::metadata(&key_file).and_then(|m| m.modified())),
                    ),
                    // Crashed before the key was recorded: still listed so it can be aborted.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => (
                        String::new(),
                        system_time_utc(entry.metadata().and_then(|m| m.modified())),
                    ),
                    Err(e) => return Err(StoreError::io("read", &key_file, e)),
                };
                // Keyless uploads match every prefix: whoever cleans up may take them.
                if key.is_empty() || key.starts_with(&prefix) {
                    out.push(PendingUpload {
                        key,
                        upload_id,
                        initiated,
                    });
                }
            }
            out.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
            Ok(out)
        })
        .await
    }

    async fn abort_multipart(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        let id = &upload.upload_id;
        if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\\') {
            return Err(StoreError::InvalidKey {
                key: id.clone(),
                reason: "not an upload id of this directory store",
            });
        }
        remove_upload_dir(self.uploads().join(id)).await
    }
}

async fn remove_upload_dir(dir: PathBuf) -> Result<(), StoreError> {
    blocking(move || match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove upload directory", &dir, e)),
    })
    .await
}

#[derive(Debug)]
struct DirUpload {
    key: String,
    target: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    /// `None` once completed or aborted.
    file: Option<tokio::fs::File>,
    size: u64,
}

impl DirUpload {
    async fn finish(&mut self) -> Result<ObjectMeta, StoreError> {
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::io(
                "complete",
                &self.data,
                io::Error::other("the upload is already finished"),
            ));
        };
        let data = self.data.clone();
        file.flush()
            .await
            .map_err(|e| StoreError::io("flush", &data, e))?;
        file.sync_all()
            .await
            .map_err(|e| StoreError::io("fsync", &data, e))?;
        drop(file);
        let (target, dir) = (self.target.clone(), self.dir.clone());
        let meta = blocking(move || move_into_place(&data, &target, &dir)).await?;
        if meta.len() != self.size {
            return Err(StoreError::Mismatch {
                key: self.key.clone(),
                location: format!("file://{}", self.target.display()),
                detail: format!("wrote {} bytes, the file has {}", self.size, meta.len()),
            });
        }
        Ok(meta_of(self.key.clone(), &meta))
    }
}

/// Rename the finished upload's data to `target`, durably, and drop the upload directory.
fn move_into_place(data: &Path, target: &Path, dir: &Path) -> Result<fs::Metadata, StoreError> {
    let parent = parent_of(target);
    // A concurrent delete pruned the empty parent directory: create it again.
    let vanished = |e: &StoreError| {
        matches!(e, StoreError::Io { action: "rename into place", source, .. }
            if source.kind() == io::ErrorKind::NotFound && data.exists())
    };
    dr_retry::DIRECTORY_RACE.run_blocking("moving an upload into place", vanished, || {
        fs::create_dir_all(parent).map_err(|e| StoreError::io("create directory", parent, e))?;
        fs::rename(data, target).map_err(|e| StoreError::io("rename into place", target, e))
    })?;
    sync_dir(parent)?;
    let meta = fs::metadata(target).map_err(|e| StoreError::io("stat", target, e))?;
    if let Err(e) = fs::remove_dir_all(dir) {
        tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "could not remove the finished upload directory"
        );
    }
    Ok(meta)
}

#[async_trait::async_trait]
impl MultipartUpload for DirUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::io(
                "append to",
                &self.data,
                io::Error::other("the upload is already finished"),
            ));
        };
        file.write_all(&data)
            .await
            .map_err(|e| StoreError::io("append to", &self.data, e))?;
        self.size += data.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let result = self.finish().await;
        if result.is_err() {
            // The caller cannot abort a consumed upload: clean up here.
            if let Err(e) = remove_upload_dir(self.dir.clone()).await {
                tracing::warn!(error = %e, "could not remove the failed upload");
            }
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        drop(self.file.take());
        remove_upload_dir(self.dir.clone()).await
    }
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        if self.file.is_some() {
            tracing::warn!(
                key = %self.key,
                dir = %self.dir.display(),
                "multipart upload dropped without complete() or abort(); its parts stay until aborted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, DirStore) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("repo");
        let store = DirStore::open(Location::Directory { root: root.clone() })
            .await
            .expect("open");
        assert!(root.is_dir(), "open creates the directory");
        (tmp, store)
    }

    fn keys(objects: &[ObjectMeta]) -> Vec<&str> {
        objects.iter().map(|o| o.key.as_str()).collect()
    }

    #[tokio::test]
    async fn put_get_head_list_delete() {
        let (_tmp, store) = store().await;
        store
            .put("app/2026/manifest.json", Bytes::from_static(b"{}"))
            .await
            .expect("put");
        store
            .put("app/2026/dump.age", Bytes::from_static(b"12345"))
            .await
            .expect("put");
        store
            .put("app/2027/dump.age", Bytes::from_static(b"x"))
            .await
            .expect("put");
        store
            .put("other", Bytes::from_static(b"o"))
            .await
            .expect("put");
        // Overwrite.
        store
            .put("other", Bytes::from_static(b"oo"))
            .await
            .expect("put");

        assert_eq!(
            store.get("other").await.expect("get"),
            Bytes::from_static(b"oo")
        );
        let head = store
            .head("app/2026/dump.age")
            .await
            .expect("head")
            .expect("exists");
        assert_eq!(head.size, 5);
        assert!(head.last_modified.is_some());
        assert!(
            store.head("app/2026").await.expect("head").is_none(),
            "a directory is no object"
        );
        assert!(store.head("nope").await.expect("head").is_none());

        let (size, mut reader) = store.get_reader("app/2026/dump.age").await.expect("reader");
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut read)
            .await
            .expect("read");
        assert_eq!((size, read.as_slice()), (5, &b"12345"[..]));

        let all = store.list("").await.expect("list");
        assert_eq!(
            keys(&all),
            [
                "app/2026/dump.age",
                "app/2026/manifest.json",
                "app/2027/dump.age",
                "other"
            ]
        );
        assert_eq!(keys(&store.list("app/2026/").await.expect("list")).len(), 2);
        assert_eq!(
            keys(&store.list("app/202").await.expect("list")),
            [
                "app/2026/dump.age",
                "app/2026/manifest.json",
                "app/2027/dump.age"
            ]
        );
        assert_eq!(
            keys(&store.list("app/2026/d").await.expect("list")),
            ["app/2026/dump.age"]
        );
        assert!(store.list("missing/").await.expect("list").is_empty());

        store.delete("app/2027/dump.age").await.expect("delete");
        store
            .delete("app/2027/dump.age")
            .await
            .expect("deleting a missing key is ok");
        assert!(
            !store.root.join("app/2027").exists(),
            "empty directories are pruned"
        );
        assert!(matches!(
            store.get("app/2027/dump.age").await,
            Err(StoreError::NotFound { key }) if key == "app/2027/dump.age"
        ));
        assert!(matches!(
            store.get_reader("app/2027/dump.age").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.get("app").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn list_skips_temp_files_and_uploads() {
        let (_tmp, store) = store().await;
        store
            .put("a/b", Bytes::from_static(b"1"))
            .await
            .expect("put");
        fs::write(store.root.join("a/b.tmp-1234"), b"partial").expect("write");
        let mut upload = store.start_multipart("a/c").await.expect("start");
        upload
            .put_part(Bytes::from_static(b"part"))
            .await
            .expect("part");
        assert_eq!(keys(&store.list("").await.expect("list")), ["a/b"]);
        upload.abort().await.expect("abort");
    }

    #[tokio::test]
    async fn rejects_bad_keys() {
        let (_tmp, store) = store().await;
        for key in [
            "../escape",
            "/abs",
            "a//b",
            ".dr-uploads/x",
            "a/b.tmp-1",
            "",
        ] {
            let err = store.put(key, Bytes::new()).await.expect_err(key);
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{key}: {err}");
        }
        assert!(store.list("../").await.is_err());
    }

    #[tokio::test]
    async fn put_if_absent_only_once() {
        let (_tmp, store) = store().await;
        assert!(store
            .put_if_absent("locks/app", Bytes::from_static(b"first"))
            .await
            .expect("first"));
        assert!(!store
            .put_if_absent("locks/app", Bytes::from_static(b"second"))
            .await
            .expect("second"));
        assert_eq!(
            store.get("locks/app").await.expect("get"),
            Bytes::from_static(b"first")
        );
        assert_eq!(
            keys(&store.list("").await.expect("list")),
            ["locks/app"],
            "no temp files left"
        );
        store.delete("locks/app").await.expect("delete");
        assert!(store
            .put_if_absent("locks/app", Bytes::from_static(b"third"))
            .await
            .expect("again"));
    }

    #[tokio::test]
    async fn concurrent_put_if_absent_has_one_winner() {
        let (_tmp, store) = store().await;
        let store = std::sync::Arc::new(store);
        let mut tasks = JoinSet::new();
        for i in 0..16 {
            let store = std::sync::Arc::clone(&store);
            tasks.spawn(async move {
                store
                    .put_if_absent("lock", Bytes::from(format!("{i}")))
                    .await
            });
        }
        let mut winners = 0;
        while let Some(result) = tasks.join_next().await {
            if result.expect("join").expect("put_if_absent") {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn multipart_complete() {
        let (_tmp, store) = store().await;
        let mut upload = store
            .start_multipart("app/2026/dump.age")
            .await
            .expect("start");
        upload
            .put_part(Bytes::from_static(b"aaaa"))
            .await
            .expect("part");
        upload
            .put_part(Bytes::from_static(b"bbbb"))
            .await
            .expect("part");
        upload
            .put_part(Bytes::from_static(b"cc"))
            .await
            .expect("part");
        let pending = store.list_multipart("").await.expect("list_multipart");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].key, "app/2026/dump.age");
        assert!(pending[0].initiated.is_some());
        assert!(store.list_multipart("app/").await.expect("list").len() == 1);
        assert!(store
            .list_multipart("other/")
            .await
            .expect("list")
            .is_empty());
        assert!(
            store
                .head("app/2026/dump.age")
                .await
                .expect("head")
                .is_none(),
            "invisible until complete"
        );

        let meta = upload.complete().await.expect("complete");
        assert_eq!((meta.key.as_str(), meta.size), ("app/2026/dump.age", 10));
        assert_eq!(
            store.get("app/2026/dump.age").await.expect("get"),
            Bytes::from_static(b"aaaabbbbcc")
        );
        assert!(store.list_multipart("").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn multipart_empty_object() {
        let (_tmp, store) = store().await;
        let upload = store.start_multipart("empty").await.expect("start");
        assert_eq!(upload.complete().await.expect("complete").size, 0);
        assert_eq!(store.get("empty").await.expect("get"), Bytes::new());
    }

    #[tokio::test]
    async fn multipart_abort_and_stale_cleanup() {
        let (_tmp, store) = store().await;
        let mut upload = store.start_multipart("a").await.expect("start");
        upload
            .put_part(Bytes::from_static(b"x"))
            .await
            .expect("part");
        upload.abort().await.expect("abort");
        assert!(store.list_multipart("").await.expect("list").is_empty());
        assert!(store.head("a").await.expect("head").is_none());

        // An upload left behind (process crashed) is found and aborted by id.
        let mut stale = store.start_multipart("b/c").await.expect("start");
        stale
            .put_part(Bytes::from_static(b"y"))
            .await
            .expect("part");
        drop(stale);
        let pending = store.list_multipart("b/").await.expect("list");
        assert_eq!(pending.len(), 1);
        store
            .abort_multipart(&pending[0])
            .await
            .expect("abort stale");
        store
            .abort_multipart(&pending[0])
            .await
            .expect("aborting twice is ok");
        assert!(store.list_multipart("").await.expect("list").is_empty());
        let bogus = PendingUpload {
            key: "x".into(),
            upload_id: "../..".into(),
            initiated: None,
        };
        assert!(store.abort_multipart(&bogus).await.is_err());
    }

    #[tokio::test]
    async fn probe() {
        let (_tmp, store) = store().await;
        crate::probe_writable(&store).await.expect("probe");
        assert!(
            store.list("").await.expect("list").is_empty(),
            "the probe cleans up"
        );
    }
}
