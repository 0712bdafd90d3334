//! `inspect` (docker-shaped JSON, `--format`) and `history`.

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use super::images::{find_image, show_id};
use crate::format::{self, Format, Template};
use crate::store::image::Image;
use crate::store::Store;
use crate::Global;

#[derive(Args)]
pub struct InspectArgs {
    /// Images (names or IDs)
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Format the output with a Go template ({{.Id}}, {{json .Config}}, …)
    #[arg(short, long)]
    pub format: Option<String>,
    /// Only this kind of object (image)
    #[arg(long = "type")]
    pub kind: Option<String>,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Image (name or ID)
    pub image: String,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format: table, json, or a Go template ({{.ID}} {{.CreatedSince}} {{.CreatedAt}}
    /// {{.CreatedBy}} {{.Size}} {{.Comment}})
    #[arg(long)]
    pub format: Option<String>,
}

pub fn inspect(global: &Global, args: InspectArgs) -> Result<()> {
    let kind = args.kind.as_deref().unwrap_or("");
    if !matches!(kind, "" | "image" | "container") {
        bail!("unsupported --type {kind:?}: want image or container");
    }
    let store = Store::new(&global.root);
    let template = match args.format.as_deref() {
        None | Some("") => None,
        Some(f) if f.trim() == "json" => None,
        Some(f) => Some(Template::parse(
            &f.replace("\\t", "\t").replace("\\n", "\n"),
        )?),
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &args.names {
        // Containers first, as docker.
        if kind != "image" {
            if let Some(doc) = super::container_inspect::find_container_json(&store, name) {
                docs.push(doc);
                continue;
            }
            if kind == "container" {
                errors.push(format!("No such container: {name}"));
                continue;
            }
        }
        match find_image(&store, name) {
            Ok((_, img)) => docs.push(inspect_json(&store, &img)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let mut out = String::new();
    match template {
        Some(t) => {
            for d in &docs {
                out.push_str(&t.render(d)?);
                out.push('\n');
            }
        }
        None => {
            out.push_str(&to_json_indent(&Value::Array(docs))?);
            out.push('\n');
        }
    }
    super::print(out.as_bytes())?;
    if let Some(last) = errors.pop() {
        for e in errors {
            eprintln!("Error: {e}");
        }
        bail!("{last}");
    }
    Ok(())
}

/// JSON indented by four spaces, as docker prints inspect output.
pub fn to_json_indent(v: &Value) -> Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser)?;
    Ok(String::from_utf8(buf)?)
}

/// docker's image inspect document.
pub fn inspect_json(store: &Store, img: &Image) -> Value {
    let mut config = Map::new();
    for (k, v) in [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", Value::Null),
        ("Cmd", Value::Null),
        ("Image", json!("")),
        ("Volumes", Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", Value::Null),
        ("OnBuild", Value::Null),
        ("Labels", Value::Null),
    ] {
        config.insert(k.to_string(), v);
    }
    if let Some(Value::Object(c)) = &img.config.config {
        for (k, v) in c {
            config.insert(k.clone(), v.clone());
        }
    }
    let comment = img
        .config
        .history
        .last()
        .and_then(|h| h.comment.clone())
        .unwrap_or_default();
    let layer_dirs: Vec<String> = img
        .config
        .rootfs
        .diff_ids
        .iter()
        .rev()
        .map(|d| store.layer_dir(d).display().to_string())
        .collect();
    let mut doc = json!({
        "Id": img.id.to_string(),
        "RepoTags": img.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
        "RepoDigests": img.repo_digests.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
        "Parent": "",
        "Comment": comment,
        "Created": img.config.created.clone().unwrap_or_default(),
        "DockerVersion": img.config.extra.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": img.config.author.clone().unwrap_or_default(),
        "Config": Value::Object(config),
        "Architecture": img.config.architecture,
        "Os": img.config.os,
        "Size": img.size,
        "GraphDriver": {
            "Data": {"Layers": layer_dirs.join(":")},
            "Name": "strata"
        },
        "RootFS": {
            "Type": if img.config.rootfs.kind.is_empty() { "layers" } else { img.config.rootfs.kind.as_str() },
            "Layers": img.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        // Layers pulled lazily: bytes of their files local so far, of the layer's size.
        "LazyLayers": img
            .config
            .rootfs
            .diff_ids
            .iter()
            .filter_map(|d| store.lazy_progress(d))
            .map(|l| json!({"Digest": l.blob.to_string(), "Local": l.local, "Size": l.size}))
            .collect::<Vec<_>>(),
        "Descriptor": {
            "mediaType": img.manifest_media_type,
            "digest": img.manifest_digest.to_string(),
        },
    });
    if let Some(v) = &img.config.variant {
        doc.as_object_mut()
            .expect("an object")
            .insert("Variant".into(), json!(v));
    }
    doc
}

pub fn history(global: &Global, args: HistoryArgs) -> Result<()> {
    let store = Store::new(&global.root);
    let (_, img) = find_image(&store, &args.image)?;
    let trunc = !args.no_trunc;
    let format = if args.quiet && args.format.is_none() {
        Format::Raw(Template::parse("{{.ID}}")?)
    } else {
        Format::parse(
            args.format.as_deref(),
            "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        )?
    };
    let rows = history_rows(&store, &img, trunc, args.human);
    let headers = json!({
        "ID": "IMAGE",
        "CreatedSince": "CREATED",
        "CreatedAt": "CREATED AT",
        "CreatedBy": "CREATED BY",
        "Size": "SIZE",
        "Comment": "COMMENT",
    });
    let mut out = Vec::new();
    format.print(&mut out, &headers, &rows)?;
    super::print(&out)
}

/// One row per history entry, newest first; entries that made a layer get its size. Images
/// without history get one row per layer.
fn history_rows(store: &Store, img: &Image, trunc: bool, human: bool) -> Vec<Value> {
    let layer_size = |i: usize| -> u64 {
        let Some((blob, diff)) = img.layers().nth(i) else {
            return 0;
        };
        store.layer_meta(diff).map(|m| m.size).unwrap_or(blob.size)
    };
    let mut entries: Vec<(Option<i64>, String, u64, String)> = Vec::new();
    if img.config.history.is_empty() {
        for i in 0..img.manifest.layers.len() {
            entries.push((
                img.created_unix(),
                String::new(),
                layer_size(i),
                String::new(),
            ));
        }
    } else {
        let mut layer = 0;
        for h in &img.config.history {
            let size = if h.empty_layer {
                0
            } else {
                layer += 1;
                layer_size(layer - 1)
            };
            entries.push((
                h.created.as_deref().and_then(format::parse_time),
                h.created_by.clone().unwrap_or_default(),
                size,
                h.comment.clone().unwrap_or_default(),
            ));
        }
    }
    entries.reverse();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (created, by, size, comment))| {
            let by = by.replace('\t', " ");
            let created_at = created
                .and_then(|c| jiff::Timestamp::from_second(c).ok())
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "N/A".into());
            json!({
                "ID": if i == 0 { show_id(&img.id, trunc) } else { "<missing>".to_string() },
                "CreatedSince": if human { format::since(created) } else { created_at.clone() },
                "CreatedAt": created_at,
                "CreatedBy": if trunc { format::ellipsis(&by, 45) } else { by },
                "Size": if human { format::human_size(size) } else { size.to_string() },
                "Comment": comment,
            })
        })
        .collect()
}
