//! The builder's loop: stages, then each instruction as a step (see the module docs of
//! [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Seek;

use serde_json::{json, Value};
use strata_image::change::ConfigChanger;
use strata_image::digest::{Digest, Hasher};
use strata_image::oci::History;
use strata_image::store::author::{Authoring, NewImage, NewLayer};
use strata_image::store::image::Image;
use strata_image::store::Store;

use super::copy::{CopyRequest, Plan};
use super::lex::Lexer;
use super::parse::{Dockerfile, Instruction};
use super::tree::Tree;
use super::{run, BuildObserver, BuildOptions, Context};
use crate::{Error, Result};

/// Where the cache keeps its keys, in the store.
const CACHE_DIR: &str = "build-cache";

pub(super) struct Builder<'a> {
    store: &'a Store,
    context: &'a Context,
    opts: &'a BuildOptions,
    obs: &'a dyn BuildObserver,
    build_args: BTreeMap<String, Option<String>>,
    used_args: BTreeSet<String>,
    lexer: Lexer,
    /// Step counter and total, for `Step N/M`.
    n: usize,
    total: usize,
}

/// One stage being built.
struct Stage {
    image: Option<Image>,
    changer: ConfigChanger,
    /// ARGs declared in the stage, with their values.
    args: BTreeMap<String, String>,
    author: Option<String>,
}

impl Stage {
    /// A variable as expansion sees it: ENV first, then ARG (docker's order).
    fn var(&self, name: &str) -> Option<String> {
        let env = self.changer.config.get("Env").and_then(Value::as_array);
        if let Some(env) = env {
            for e in env.iter().filter_map(Value::as_str) {
                if let Some((k, v)) = e.split_once('=') {
                    if k == name {
                        return Some(v.to_string());
                    }
                }
            }
        }
        self.args.get(name).cloned()
    }

    fn config(&self) -> Value {
        Value::Object(self.changer.config.clone())
    }
}

/// A FROM line: the base as written (expanded) and the stage's name.
struct From {
    base: String,
    name: Option<String>,
}

fn parse_from(i: &Instruction, lexer: &Lexer, meta: &BTreeMap<String, String>) -> Result<From> {
    i.check_flags(&["platform"])?;
    let vars = |n: &str| meta.get(n).cloned();
    let words = lexer.words(&i.args, &vars).map_err(|m| i.error(m))?;
    match words.as_slice() {
        [base] => Ok(From {
            base: base.clone(),
            name: None,
        }),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => Ok(From {
            base: base.clone(),
            name: Some(name.to_ascii_lowercase()),
        }),
        _ => Err(i.error("FROM requires either one or three arguments")),
    }
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        store: &'a Store,
        context: &'a Context,
        opts: &'a BuildOptions,
        obs: &'a dyn BuildObserver,
        build_args: BTreeMap<String, Option<String>>,
    ) -> Builder<'a> {
        Builder {
            store,
            context,
            opts,
            obs,
            build_args,
            used_args: BTreeSet::new(),
            lexer: Lexer::default(),
            n: 0,
            total: 0,
        }
    }

    /// Builds every stage up to the target; the last one's image ID and manifest digest.
    pub(super) fn run(mut self, file: &Dockerfile) -> Result<(Digest, Digest)> {
        self.lexer = Lexer {
            escape: file.escape,
        };
        // Meta ARGs (before the first FROM), then the stages.
        let mut meta = BTreeMap::new();
        let mut stages: Vec<(Instruction, Vec<Instruction>)> = Vec::new();
        let mut meta_steps = Vec::new();
        for i in &file.instructions {
            match (i.keyword.as_str(), stages.last_mut()) {
                ("FROM", _) => stages.push((i.clone(), Vec::new())),
                (_, Some((_, body))) => body.push(i.clone()),
                ("ARG", None) => {
                    meta_steps.push(i);
                    for (name, default) in self.arg_pairs(i, &|n| meta.get(n).cloned())? {
                        let value = match self.build_args.get(&name) {
                            Some(Some(v)) => Some(v.clone()),
                            _ => default,
                        };
                        self.used_args.insert(name.clone());
                        if let Some(v) = value {
                            meta.insert(name, v);
                        }
                    }
                }
                (_, None) => return Err(i.error("no build stage in current context")),
            }
        }
        if stages.is_empty() {
            return Err(Error::Dockerfile {
                line: file.instructions.last().map_or(1, |i| i.line),
                message: "the Dockerfile has no FROM: no build stage".into(),
            });
        }
        let froms = stages
            .iter()
            .map(|(f, _)| parse_from(f, &self.lexer, &meta))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<Option<String>> = froms.iter().map(|f| f.name.clone()).collect();
        let last = match &self.opts.target {
            None => stages.len() - 1,
            Some(t) => names
                .iter()
                .position(|n| n.as_deref() == Some(&t.to_ascii_lowercase()))
                .ok_or_else(|| Error::BuildTarget(t.clone()))?,
        };
        stages.truncate(last + 1);
        // docker's classic builder counts (and shows) the ARGs before the first FROM.
        self.total = meta_steps.len() + stages.iter().map(|(_, b)| b.len() + 1).sum::<usize>();
        for i in meta_steps {
            self.step(i);
        }

        let authoring = self.store.authoring()?;
        let mut done: Vec<Option<Image>> = Vec::new();
        for (idx, ((from_i, body), from)) in stages.iter().zip(&froms).enumerate() {
            self.step(from_i);
            let base = self.stage_image(&from.base, idx, &names, &done, from_i)?;
            if let Some(b) = &base {
                self.obs.step_done(&b.id);
            }
            let mut st = Stage {
                changer: ConfigChanger::new(base.as_ref().and_then(|b| b.config.config.as_ref())),
                image: base,
                args: BTreeMap::new(),
                author: None,
            };
            for i in body {
                self.step(i);
                self.instruction(&authoring, &mut st, i, idx, &names, &done, &meta)?;
            }
            done.push(st.image);
        }
        let unused: Vec<&String> = self
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.obs.warning(&format!(
                "[Warning] One or more build-args [{}] were not consumed",
                list.join(" ")
            ));
        }
        match done.pop().flatten() {
            Some(img) => Ok((img.id, img.manifest_digest)),
            None => Err(Error::EmptyBuild),
        }
    }

    fn step(&mut self, i: &Instruction) {
        self.n += 1;
        self.obs.step(self.n, self.total, &i.original);
    }

    /// The image a stage or `--from` names: an earlier stage (by name or number), scratch,
    /// or an image (pulled when missing). A stage not built yet is a cycle.
    fn stage_image(
        &self,
        what: &str,
        current: usize,
        names: &[Option<String>],
        done: &[Option<Image>],
        i: &Instruction,
    ) -> Result<Option<Image>> {
        let lower = what.to_ascii_lowercase();
        if let Some(pos) = names.iter().position(|n| n.as_deref() == Some(&lower)) {
            if pos >= current {
                return Err(i.error(format!("circular dependency detected on stage: {lower}")));
            }
            return Ok(done[pos].clone());
        }
        if let Ok(n) = what.parse::<usize>() {
            if n < current {
                return Ok(done[n].clone());
            }
            return Err(i.error(format!("circular dependency detected on stage: {n}")));
        }
        if lower == "scratch" {
            return Ok(None);
        }
        let img =
            crate::create::resolve_image(self.store, what, &strata_image::pull::Silent, &|_| {})?;
        Ok(Some(img))
    }

    /// `ARG a=1 b`: names and their defaults (expanded).
    fn arg_pairs(
        &self,
        i: &Instruction,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, Option<String>)>> {
        let words = self.lexer.words(&i.args, vars).map_err(|m| i.error(m))?;
        if words.is_empty() {
            return Err(i.error("ARG requires at least one argument"));
        }
        Ok(words
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w, None),
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn instruction(
        &mut self,
        authoring: &Authoring<'_>,
        st: &mut Stage,
        i: &Instruction,
        idx: usize,
        names: &[Option<String>],
        done: &[Option<Image>],
        meta: &BTreeMap<String, String>,
    ) -> Result<()> {
        let vars = |n: &str| st.var(n);
        let word = |s: &str| self.lexer.word(s, &vars).map_err(|m| i.error(m));
        let words = |s: &str| self.lexer.words(s, &vars).map_err(|m| i.error(m));
        let kw = i.keyword.as_str();
        if !matches!(kw, "COPY" | "ADD" | "HEALTHCHECK" | "RUN") {
            i.check_flags(&[])?;
        }
        // Metadata instructions: the text the config changer gets (expanded where docker
        // expands).
        let text = match kw {
            "ARG" => {
                let pairs = self.arg_pairs(i, &vars)?;
                let mut shown = Vec::new();
                for (name, default) in pairs {
                    let value = match self.build_args.get(&name) {
                        Some(Some(v)) => Some(v.clone()),
                        _ => default.clone().or_else(|| meta.get(&name).cloned()),
                    };
                    self.used_args.insert(name.clone());
                    shown.push(match &default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    if let Some(v) = value {
                        st.args.insert(name, v);
                    }
                }
                // The values are the key's part: a new --build-arg is a new step.
                let values: Vec<String> = st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return self.meta_step(
                    authoring,
                    st,
                    &format!("ARG {}", shown.join(" ")),
                    &values.join("\0"),
                    |_| Ok(()),
                );
            }
            "ENV" | "LABEL" => {
                let ws = words(&i.args)?;
                let pairs: Vec<(String, String)> = match ws.first() {
                    Some(first) if !first.contains('=') => {
                        // The legacy form: `ENV KEY the rest`.
                        let rest = i.args.trim_start()
                            [i.args.trim_start().find(char::is_whitespace).unwrap_or(0)..]
                            .trim();
                        if rest.is_empty() && kw == "ENV" {
                            return Err(i.error("ENV names can not be blank"));
                        }
                        vec![(first.clone(), word(rest)?)]
                    }
                    None => return Err(i.error(format!("{kw} requires at least one argument"))),
                    Some(_) => ws
                        .iter()
                        .map(|w| {
                            let (k, v) = w.split_once('=').ok_or_else(|| {
                                i.error(format!("{kw} {w}: mixing KEY=VALUE and KEY VALUE"))
                            })?;
                            Ok((k.to_string(), v.to_string()))
                        })
                        .collect::<Result<_>>()?,
                };
                // The changer reads the pairs back quoted; history shows them plain.
                let quoted = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", super::quote(k), super::quote(v)))
                    .collect::<Vec<_>>()
                    .join(" ");
                let plain = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                return self.meta_step(authoring, st, &format!("{kw} {plain}"), &quoted, |c| {
                    c.apply(kw, &quoted).map_err(|e| i.error(e.to_string()))
                });
            }
            "EXPOSE" => words(&i.args)?.join(" "),
            "VOLUME" => {
                let paths = match i.json_args() {
                    Some(a) => a.iter().map(|p| word(p)).collect::<Result<Vec<_>>>()?,
                    None => words(&i.args)?,
                };
                serde_json::to_string(&paths).unwrap_or_default()
            }
            "USER" | "WORKDIR" | "STOPSIGNAL" => word(&i.args)?,
            "CMD" | "ENTRYPOINT" | "SHELL" | "ONBUILD" | "MAINTAINER" => i.args.clone(),
            "HEALTHCHECK" => {
                let hc = healthcheck(i)?;
                return self.meta_step(authoring, st, &i.original, "", move |c| {
                    c.config.insert("Healthcheck".into(), hc);
                    Ok(())
                });
            }
            "RUN" => return self.run_step(authoring, st, i),
            "COPY" | "ADD" => return self.copy_step(authoring, st, i, idx, names, done),
            _ => return Err(i.error(format!("unknown instruction: {kw}"))),
        };
        let shown = format!("{kw} {text}");
        if kw == "MAINTAINER" {
            st.author = Some(text.clone());
            return self.meta_step(authoring, st, &shown, "", |_| Ok(()));
        }
        self.meta_step(authoring, st, &shown, "", |c| {
            c.apply(kw, &text).map_err(|e| i.error(e.to_string()))
        })
    }

    /// A step that changes only the config: cached by parent + instruction (+ `extra`).
    fn meta_step(
        &mut self,
        authoring: &Authoring<'_>,
        st: &mut Stage,
        shown: &str,
        extra: &str,
        change: impl FnOnce(&mut ConfigChanger) -> Result<()>,
    ) -> Result<()> {
        change(&mut st.changer)?;
        let key = key(&st.image, &[shown, extra]);
        if self.cached(st, &key)? {
            return Ok(());
        }
        let row = format!("/bin/sh -c #(nop) {shown}");
        self.commit(authoring, st, &key, None, row, true)
    }

    /// Takes the step's image from the cache when it is there.
    fn cached(&self, st: &mut Stage, key: &Digest) -> Result<bool> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let path = self.store.root().join(CACHE_DIR).join(key.hex());
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(false);
        };
        let Ok(manifest) = Digest::parse(text.trim()) else {
            return Ok(false);
        };
        let table = self.store.table()?;
        let Some(entry) = table.get(&manifest) else {
            return Ok(false);
        };
        let img = self.store.load_image(entry)?;
        self.obs.using_cache();
        self.obs.step_done(&img.id);
        st.changer.config = img
            .config
            .config
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        st.image = Some(img);
        Ok(true)
    }

    /// Writes the step's image (the parent, `layer`, the stage's config, one history row)
    /// and remembers it under `key`.
    fn commit(
        &self,
        authoring: &Authoring<'_>,
        st: &mut Stage,
        key: &Digest,
        layer: Option<NewLayer>,
        created_by: String,
        empty_layer: bool,
    ) -> Result<()> {
        let written = authoring.write_image(&NewImage {
            base: st.image.clone(),
            layers: layer.into_iter().collect(),
            config: Some(st.config()),
            history: vec![History {
                created_by: Some(created_by),
                empty_layer,
                ..Default::default()
            }],
            author: st.author.clone(),
            created: None,
            tags: Vec::new(),
        })?;
        let table = self.store.table()?;
        let entry = table
            .get(&written.manifest.digest)
            .ok_or_else(|| strata_image::Error::NoSuchImage(written.id.to_string()))?;
        let img = self.store.load_image(entry)?;
        let dir = self.store.root().join(CACHE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Create {
            path: dir.clone(),
            source,
        })?;
        strata_image::store::fsutil::atomic_write(
            &self.store.tmp_dir(),
            &dir.join(key.hex()),
            written.manifest.digest.to_string().as_bytes(),
        )?;
        self.obs.step_done(&img.id);
        st.image = Some(img);
        Ok(())
    }

    fn run_step(
        &mut self,
        authoring: &Authoring<'_>,
        st: &mut Stage,
        i: &Instruction,
    ) -> Result<()> {
        i.check_flags(&[])?;
        let (argv, shown) = match i.json_args() {
            Some(a) => {
                let shown = a.join(" ");
                (a, shown)
            }
            None => {
                let mut shell: Vec<String> = st
                    .changer
                    .config
                    .get("Shell")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .filter(|s: &Vec<String>| !s.is_empty())
                    .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                shell.push(i.args.clone());
                let shown = shell.join(" ");
                (shell, shown)
            }
        };
        let env: Vec<String> = st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let argv_json = serde_json::to_string(&argv).unwrap_or_default();
        let key = key(&st.image, &["RUN", &argv_json, &env.join("\0")]);
        if self.cached(st, &key)? {
            return Ok(());
        }
        if st.image.is_none() {
            // FROM scratch: an empty image to run on (the command will not be found).
            let empty = key_of(&["scratch"]);
            self.commit(authoring, st, &empty, None, String::new(), true)?;
        }
        let image = st.image.clone().expect("made above");
        let c = run::make(
            self.store,
            &run::RunRequest {
                image: &image,
                argv,
                env,
                network: self.opts.network.clone(),
                add_hosts: &self.opts.add_hosts,
                quiet: self.opts.quiet,
            },
        )?;
        let short = c.record.id[..12].to_string();
        self.obs.running_in(&short);
        let code = run::run(self.store, &c, self.opts.quiet)?;
        if code != 0 {
            // Asked before the container (and its upper) is removed, which frees the disk.
            let note = match run::disk_full(self.store.root()) {
                true => format!(
                    ": the store's disk ({}) is full: No space left on device",
                    self.store.root().display()
                ),
                false => String::new(),
            };
            drop(c);
            return Err(Error::RunFailed {
                command: shown,
                code,
                note,
            });
        }
        let layer = run::layer(authoring, &c)?;
        drop(c);
        self.obs.removed(&short);
        self.commit(authoring, st, &key, Some(layer), shown, false)
    }

    fn copy_step(
        &mut self,
        authoring: &Authoring<'_>,
        st: &mut Stage,
        i: &Instruction,
        idx: usize,
        names: &[Option<String>],
        done: &[Option<Image>],
    ) -> Result<()> {
        let add = i.keyword == "ADD";
        match add {
            true => i.check_flags(&["chown"])?,
            false => i.check_flags(&["from", "chown", "link"])?,
        }
        let vars = |n: &str| st.var(n);
        let mut words = match i.json_args() {
            Some(a) => a
                .iter()
                .map(|w| self.lexer.word(w, &vars))
                .collect::<std::result::Result<Vec<_>, _>>(),
            None => self.lexer.words(&i.args, &vars),
        }
        .map_err(|m| i.error(m))?;
        if words.len() < 2 {
            return Err(i.error(format!("{} requires at least two arguments", i.keyword)));
        }
        let dest = words.pop().expect("two or more");
        if add {
            if let Some(url) = words.iter().find(|w| w.contains("://")) {
                return Err(i.error(format!(
                    "ADD from a URL ({url}) is not supported: download it in a RUN step"
                )));
            }
        }
        let dest_tree = self.tree(&st.image)?;
        let owner = match i.flag("chown") {
            None => None,
            Some(c) => {
                let c = self.lexer.word(c, &vars).map_err(|m| i.error(m))?;
                Some(dest_tree.owner(&c).map_err(|m| i.error(m))?)
            }
        };
        let workdir = st
            .changer
            .config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string();
        let req = CopyRequest {
            srcs: &words,
            dest: &dest,
            workdir: &workdir,
            owner,
            extract: add,
        };
        let (plan, src_tree, from_id) = match i.flag("from") {
            Some(from) => {
                let from = self.lexer.word(from, &vars).map_err(|m| i.error(m))?;
                let img = self.stage_image(&from, idx, names, done, i)?;
                let tree = self.tree(&img)?;
                let plan = Plan::from_tree(&tree, &req, &dest_tree)?;
                let id = img.map(|i| i.id.to_string()).unwrap_or_default();
                (plan, Some(tree), id)
            }
            None => (
                Plan::from_context(self.context, &req, &dest_tree)?,
                None,
                String::new(),
            ),
        };
        let digest = plan.digest(src_tree.as_ref())?;
        let shown = i.original.clone();
        let chown = owner.map(|(u, g)| format!("{u}:{g}")).unwrap_or_default();
        let key = key(
            &st.image,
            &[
                &i.keyword,
                &words.join("\0"),
                &dest,
                &chown,
                &from_id,
                &digest.to_string(),
            ],
        );
        if self.cached(st, &key)? {
            return Ok(());
        }
        let mut tmp =
            tempfile::tempfile_in(self.store.tmp_dir()).map_err(|source| Error::Create {
                path: self.store.tmp_dir(),
                source,
            })?;
        plan.write_tar(src_tree.as_ref(), &mut tmp)?;
        tmp.rewind()
            .map_err(|source| Error::WriteLayerTar { source })?;
        let layer = authoring.add_layer(&mut tmp)?;
        let kind = match (plan.sources, plan.dir_source) {
            (1, true) => "dir",
            (1, false) => "file",
            _ => "multi",
        };
        let _ = shown;
        let row = format!(
            "/bin/sh -c #(nop) {} {kind}:{} in {dest} ",
            i.keyword,
            digest.hex()
        );
        self.commit(authoring, st, &key, Some(layer), row, false)
    }

    /// The tree of `img` (empty for none).
    fn tree(&self, img: &Option<Image>) -> Result<Tree> {
        match img {
            None => Tree::open(Vec::new()),
            Some(img) => Tree::open(self.store.image_layers(img)?),
        }
    }
}

/// HEALTHCHECK as the config stores it (docker's field names, durations in nanoseconds).
fn healthcheck(i: &Instruction) -> Result<Value> {
    i.check_flags(&[
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ])?;
    let args = i.args.trim();
    let (first, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
    let mut hc = serde_json::Map::new();
    match first.to_ascii_uppercase().as_str() {
        "NONE" if rest.trim().is_empty() => {
            hc.insert("Test".into(), json!(["NONE"]));
            return Ok(Value::Object(hc));
        }
        "CMD" => {
            let test = match super::parse::json_form(rest) {
                Some(a) => std::iter::once("CMD".to_string())
                    .chain(a)
                    .collect::<Vec<_>>(),
                None => vec!["CMD-SHELL".into(), rest.trim().to_string()],
            };
            hc.insert("Test".into(), json!(test));
        }
        _ => return Err(i.error("HEALTHCHECK requires NONE or CMD")),
    }
    for (flag, field) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = i.flag(flag) {
            let ns = duration_ns(v).ok_or_else(|| i.error(format!("invalid --{flag}: {v}")))?;
            hc.insert(field.into(), json!(ns));
        }
    }
    if let Some(r) = i.flag("retries") {
        let n: i64 = r
            .parse()
            .map_err(|_| i.error(format!("invalid --retries: {r}")))?;
        hc.insert("Retries".into(), json!(n));
    }
    Ok(Value::Object(hc))
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `2h`) in nanoseconds.
fn duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(total as i64)
}

/// A cache key: the parent image and the step's parts.
fn key(parent: &Option<Image>, parts: &[&str]) -> Digest {
    let parent = parent
        .as_ref()
        .map(|p| p.id.to_string())
        .unwrap_or_default();
    let mut all = vec![parent.as_str()];
    all.extend_from_slice(parts);
    key_of(&all)
}

fn key_of(parts: &[&str]) -> Digest {
    let mut h = Hasher::default();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\0\x01");
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("5"), None);
        assert_eq!(duration_ns(""), None);
    }

    #[test]
    fn healthcheck_forms() {
        let d = super::super::parse::parse(
            "HEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\nHEALTHCHECK NONE\n\
             HEALTHCHECK CMD [\"true\"]\nHEALTHCHECK --bogus=1 CMD x\n",
        )
        .unwrap();
        let hc = healthcheck(&d.instructions[0]).unwrap();
        assert_eq!(hc["Test"], json!(["CMD-SHELL", "wget -q localhost"]));
        assert_eq!(hc["Interval"], json!(5_000_000_000i64));
        assert_eq!(hc["Retries"], json!(3));
        assert_eq!(
            healthcheck(&d.instructions[1]).unwrap()["Test"],
            json!(["NONE"])
        );
        assert_eq!(
            healthcheck(&d.instructions[2]).unwrap()["Test"],
            json!(["CMD", "true"])
        );
        assert!(healthcheck(&d.instructions[3]).is_err());
    }

    #[test]
    fn keys_differ_by_parent_and_parts() {
        assert_ne!(key(&None, &["a", "b"]), key(&None, &["ab"]));
        assert_eq!(key(&None, &["a"]), key(&None, &["a"]));
    }
}
