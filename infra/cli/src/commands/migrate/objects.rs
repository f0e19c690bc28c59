//! The key/value layouts the file and S3 stores share: a directory tree or a
//! bucket, read and (for `--wipe-source`) rewritten object by object.

use std::path::PathBuf;

use crate::exit::Failure;

/// A directory or an S3 bucket, addressed by `/`-separated keys.
#[derive(Debug, Clone)]
pub enum Objects {
    Dir {
        root: PathBuf,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

impl Objects {
    pub fn describe(&self) -> String {
        match self {
            Objects::Dir { root } => root.display().to_string(),
            Objects::S3 { bucket, .. } => format!("s3://{bucket}"),
        }
    }

    /// Every key under `prefix` (`""` for all), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Failure> {
        let mut keys = Vec::new();
        match self {
            Objects::Dir { root } => {
                let root = root.clone();
                let prefix = prefix.to_owned();
                keys = tokio::task::spawn_blocking(move || list_dir(&root, &prefix))
                    .await
                    .map_err(|e| Failure::msg(format!("listing: {e}")))??;
            }
            Objects::S3 { client, bucket } => {
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| {
                        Failure::msg(format!(
                            "can't list s3://{bucket}/{prefix}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(e)
                        ))
                    })?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_owned)),
                    );
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        match self {
            Objects::Dir { root } => {
                std::fs::read(root.join(key)).map_err(|e| format!("can't read: {e}"))
            }
            Objects::S3 { client, bucket } => {
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        format!("can't get: {}", aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| format!("can't read: {e}"))?;
                Ok(body.into_bytes().to_vec())
            }
        }
    }

    /// Replaces an object in place (same file, same key).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), Failure> {
        match self {
            Objects::Dir { root } => {
                use std::io::Write;
                let path = root.join(key);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| Failure::msg(format!("can't rewrite {}: {e}", path.display())))?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                Ok(())
            }
            Objects::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(bytes.into())
                    .send()
                    .await
                    .map_err(|e| {
                        Failure::msg(format!(
                            "can't rewrite s3://{bucket}/{key}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(e)
                        ))
                    })?;
                Ok(())
            }
        }
    }

    /// Older copies a rewrite leaves behind: S3 versions (when the bucket is
    /// versioned). A directory has none the command can see.
    pub async fn versioning_warning(&self) -> Option<String> {
        let Objects::S3 { client, bucket } = self else {
            return None;
        };
        match client.get_bucket_versioning().bucket(bucket).send().await {
            Ok(v) if v.status().is_some() => Some(format!(
                "s3://{bucket} has versioning {}: overwritten objects keep their old versions (with the tokens); \
                 delete the noncurrent versions (aws s3api list-object-versions / delete-object --version-id)",
                v.status()
                    .map(|s| s.as_str().to_lowercase())
                    .unwrap_or_default()
            )),
            Ok(_) => None,
            Err(e) => Some(format!(
                "can't tell whether s3://{bucket} keeps old versions ({}); check list-object-versions",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )),
        }
    }
}

/// Files two levels deep (`tenant-dir/file`), the layout every file store writes.
fn list_dir(root: &std::path::Path, prefix: &str) -> Result<Vec<String>, Failure> {
    let base = root.join(prefix);
    let read = |p: &std::path::Path| {
        std::fs::read_dir(p).map_err(|e| Failure::msg(format!("can't list {}: {e}", p.display())))
    };
    let mut keys = Vec::new();
    for dir in read(&base)? {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        for file in read(&dir.path())? {
            let file = file?;
            if file.file_type()?.is_file() {
                let (d, f) = (dir.file_name(), file.file_name());
                keys.push(format!(
                    "{prefix}{}/{}",
                    d.to_string_lossy(),
                    f.to_string_lossy()
                ));
            }
        }
    }
    Ok(keys)
}
