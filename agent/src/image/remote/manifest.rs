//! Manifests: the media types berth accepts, fetching one from one host
//! (size-limited, verified against its digest, stored), and parsing it.

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::RemoteError;
use super::body::{MAX_MANIFEST_BYTES, read_capped};
use super::progress::FetchOptions;
use super::request::shown;
use super::session::Session;
use crate::image::content::{ContentStore, sha256_digest_of};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Every manifest type berth understands, for the Accept header.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A parsed manifest document.
pub(super) enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

pub(super) struct ManifestBlob {
    pub digest: Digest,
    pub media_type: String,
    pub document: Document,
    pub transferred: u64,
}

pub(super) async fn fetch_manifest(
    session: &Session<'_>,
    reference: &str,
    expected: Option<&Digest>,
    store: &ContentStore,
    options: &FetchOptions<'_>,
) -> Result<ManifestBlob, RemoteError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
    let response = session.get("manifests", reference, headers).await?;
    let url = shown(response.url());
    if !response.status().is_success() {
        return Err(session.status_error(response).await);
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let claimed = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_capped(
        response,
        &url,
        "manifest",
        MAX_MANIFEST_BYTES,
        session.stall(),
    )
    .await?;
    let actual = sha256_digest_of(&body);
    let mismatch = |wanted: &str| RemoteError::Protocol {
        url: url.clone(),
        reason: format!("manifest content hashes to {actual}, but {wanted} was expected"),
    };
    match (expected, &claimed) {
        (Some(expected), _) if *expected != actual => return Err(mismatch(expected.as_ref())),
        (None, Some(claimed))
            if claimed.starts_with("sha256:") && *claimed != actual.to_string() =>
        {
            return Err(mismatch(claimed));
        }
        _ => {}
    }
    let (media_type, document) =
        parse_manifest(content_type.as_deref(), &body).map_err(|reason| RemoteError::Protocol {
            url: url.clone(),
            reason,
        })?;
    let transferred = body.len() as u64;
    options.protect(&actual)?;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write_blob(&body))
        .await
        .map_err(|err| RemoteError::Internal {
            reason: format!("storing manifest: {err}"),
        })?
        .map_err(|err| RemoteError::content(&actual, err))?;
    Ok(ManifestBlob {
        digest: actual,
        media_type,
        document,
        transferred,
    })
}

/// Parses a manifest body by its media type: the Content-Type header when it
/// names a manifest type, else the body's own `mediaType`, else its shape.
fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<(String, Document), String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|err| format!("manifest is not JSON: {err}"))?;
    if probe.schema_version == Some(1) {
        return Err(
            "Docker schema1 manifests are not supported (re-push the image with a current client)"
                .to_owned(),
        );
    }
    let known = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
    let media_type = content_type
        .filter(|t| known.contains(t))
        .map(str::to_owned)
        .or(probe.media_type)
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
    let document = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Document::Index(Box::new(
            serde_json::from_slice(body).map_err(|err| format!("invalid {media_type}: {err}"))?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => Document::Manifest(Box::new(
            serde_json::from_slice(body).map_err(|err| format!("invalid {media_type}: {err}"))?,
        )),
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };
    Ok((media_type, document))
}

/// A layer descriptor with Docker's media types mapped to OCI's, so that
/// unpacking needs to know only the OCI ones.
pub(super) fn oci_layer(layer: &Descriptor) -> Descriptor {
    let mut layer = layer.clone();
    let mapped = match layer.media_type() {
        MediaType::Other(t) if t == DOCKER_LAYER_GZIP => Some(MediaType::ImageLayerGzip),
        MediaType::Other(t) if t == DOCKER_FOREIGN_LAYER_GZIP => {
            Some(MediaType::ImageLayerNonDistributableGzip)
        }
        _ => None,
    };
    if let Some(mapped) = mapped {
        layer.set_media_type(mapped);
    }
    layer
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_SCHEMA2: &str = r#"{
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3,
                    "digest": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]
    }"#;

    #[test]
    fn docker_schema2_parses_and_layers_map_to_oci_types() {
        let (media_type, document) =
            parse_manifest(Some(DOCKER_MANIFEST), DOCKER_SCHEMA2.as_bytes()).expect("parse");
        assert_eq!(media_type, DOCKER_MANIFEST);
        let Document::Manifest(manifest) = document else {
            panic!("a manifest, not an index");
        };
        let layer = oci_layer(&manifest.layers()[0]);
        assert_eq!(*layer.media_type(), MediaType::ImageLayerGzip);
        assert_eq!(layer.size(), 3);
    }

    #[test]
    fn media_type_falls_back_to_the_body_when_the_header_is_generic() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let (media_type, document) =
            parse_manifest(Some("application/json"), index.as_bytes()).expect("parse");
        assert_eq!(media_type, OCI_INDEX);
        assert!(matches!(document, Document::Index(_)));
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        let (media_type, _) = parse_manifest(None, bare.as_bytes()).expect("bare index");
        assert_eq!(media_type, OCI_INDEX);
    }

    #[test]
    fn schema1_and_unknown_types_are_refused_clearly() {
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_manifest(None, schema1.as_bytes())
            .err()
            .expect("schema1");
        assert!(err.contains("schema1"), "{err}");
        let other = r#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.config.v1+json"}"#;
        let err = parse_manifest(None, other.as_bytes()).err().expect("helm");
        assert!(err.contains("unsupported"), "{err}");
    }
}
