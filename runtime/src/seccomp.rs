//! Seccomp: a [`Profile`] in docker's JSON format (`defaultAction`, `syscalls[{names,
//! action, errnoRet, args}]`, `architectures`), docker's default profile as data
//! ([`Profile::docker_default`]), and [`Profile::install`], which the container's process
//! calls right before exec.
//!
//! The BPF comes from libseccomp (syscall names resolved per architecture, argument
//! comparisons), never from a hand-written assembler. libseccomp's own no_new_privs is off:
//! the process sets it only when asked (`--security-opt no-new-privileges`), and loads the
//! filter while it still holds CAP_SYS_ADMIN otherwise, as runc does.

mod default;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};

/// Why a profile cannot be used: the field at fault and its value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Serialize, Deserialize)]
pub enum SeccompError {
    #[error("decoding the seccomp profile: {0}")]
    Decode(String),
    #[error("seccomp profile: unknown action {0:?}")]
    Action(String),
    #[error("seccomp profile: unknown comparison {0:?}")]
    Op(String),
    #[error("seccomp profile: unknown architecture {0:?}")]
    Arch(String),
    #[error("seccomp profile: argument index {0} is out of range (0-5)")]
    ArgIndex(u32),
    #[error("seccomp profile: a rule for {0:?} names no system call")]
    NoNames(String),
    #[error("loading the seccomp filter ({step}): {message}")]
    Load { step: String, message: String },
}

/// A seccomp profile, docker's JSON shape (fields docker reads and strata does not, such as
/// `comment`, are ignored).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Profile {
    /// `SCMP_ACT_ERRNO`, `SCMP_ACT_ALLOW`, `SCMP_ACT_KILL`, …
    pub default_action: String,
    /// The errno of an `SCMP_ACT_ERRNO` default; EPERM when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_X86_64`, `SCMP_ARCH_X86`, …: the filter also matches calls made in these
    /// ABIs (the native one always).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    pub syscalls: Vec<Rule>,
}

/// One rule: these calls, when every argument comparison holds, get `action`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    pub names: Vec<String>,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    /// docker's conditions: the rule applies only when the container holds every one of
    /// `includes.caps` and none of `excludes.caps` ([`Profile::for_caps`] resolves them).
    #[serde(skip_serializing_if = "Filter::is_empty")]
    pub includes: Filter,
    #[serde(skip_serializing_if = "Filter::is_empty")]
    pub excludes: Filter,
}

/// docker's `includes`/`excludes`: capability and architecture conditions.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Filter {
    pub caps: Vec<String>,
    pub arches: Vec<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty()
    }
}

/// An argument comparison: `arg[index] op value` (`SCMP_CMP_MASKED_EQ`: `arg & value ==
/// valueTwo`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    pub value_two: u64,
    pub op: String,
}

fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        // docker: an errno rule without errnoRet fails with EPERM.
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_TRACE" => ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16),
        "SCMP_ACT_LOG" => ScmpAction::Log,
        other => return Err(SeccompError::Action(other.to_string())),
    })
}

fn compare(a: &Arg) -> Result<ScmpArgCompare, SeccompError> {
    if a.index > 5 {
        return Err(SeccompError::ArgIndex(a.index));
    }
    let (op, datum) = match a.op.as_str() {
        "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, a.value),
        "SCMP_CMP_LT" => (ScmpCompareOp::Less, a.value),
        "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, a.value),
        "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, a.value),
        "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, a.value),
        "SCMP_CMP_GT" => (ScmpCompareOp::Greater, a.value),
        "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(a.value), a.value_two),
        other => return Err(SeccompError::Op(other.to_string())),
    };
    Ok(ScmpArgCompare::new(a.index, op, datum))
}

fn arch(name: &str) -> Result<ScmpArch, SeccompError> {
    name.parse::<ScmpArch>()
        .map_err(|_| SeccompError::Arch(name.to_string()))
}

fn load_error(
    step: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let step = step.into();
    move |e| SeccompError::Load {
        step,
        message: e.to_string(),
    }
}

impl Profile {
    /// Docker's default profile for a container holding `caps` (capability names, `CAP_`
    /// prefix, upper case): see the `default` module for what it allows.
    pub fn docker_default(caps: &[String]) -> Profile {
        default::profile(caps)
    }

    /// Reads a profile in docker's JSON format and checks every action, comparison and
    /// architecture name, so a bad file fails before anything is created.
    pub fn parse(json: &[u8]) -> Result<Profile, SeccompError> {
        let p: Profile =
            serde_json::from_slice(json).map_err(|e| SeccompError::Decode(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// A bundle's `linux.seccomp` (config.json, through oci-spec) as a profile: the runtime
    /// spec's seccomp object has docker's shape, so the conversion is a re-read of its
    /// JSON, checked as a file profile is. Notify listeners and filter flags are not
    /// supported (`SCMP_ACT_NOTIFY` is refused as an unknown action).
    pub fn from_oci(s: &oci_spec::runtime::LinuxSeccomp) -> Result<Profile, SeccompError> {
        let value = serde_json::to_value(s).map_err(|e| SeccompError::Decode(e.to_string()))?;
        let p: Profile =
            serde_json::from_value(value).map_err(|e| SeccompError::Decode(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), SeccompError> {
        action(&self.default_action, self.default_errno_ret)?;
        for a in &self.architectures {
            arch(a)?;
        }
        for r in &self.syscalls {
            if r.names.is_empty() {
                return Err(SeccompError::NoNames(r.action.clone()));
            }
            action(&r.action, r.errno_ret)?;
            for a in &r.args {
                compare(a)?;
            }
        }
        Ok(())
    }

    /// The profile with docker's `includes`/`excludes` capability and architecture
    /// conditions decided for a container holding `caps`, on this machine's architecture.
    pub fn for_caps(&self, caps: &[String]) -> Profile {
        let native = ScmpArch::native();
        let arch_ok = |names: &[String]| names.iter().any(|n| arch(n).ok() == Some(native));
        let holds = |c: &String| caps.iter().any(|h| h.eq_ignore_ascii_case(c));
        let syscalls = self
            .syscalls
            .iter()
            .filter(|r| r.includes.caps.iter().all(holds))
            .filter(|r| r.includes.arches.is_empty() || arch_ok(&r.includes.arches))
            .filter(|r| !r.excludes.caps.iter().any(holds))
            .filter(|r| r.excludes.arches.is_empty() || !arch_ok(&r.excludes.arches))
            .map(|r| Rule {
                includes: Filter::default(),
                excludes: Filter::default(),
                ..r.clone()
            })
            .collect();
        Profile {
            syscalls,
            ..self.clone()
        }
    }

    /// Builds the BPF and loads it into the calling thread, for the process and everything
    /// it execs. Needs no_new_privs or CAP_SYS_ADMIN in the current user namespace.
    /// Names this architecture does not know are skipped, as docker does.
    pub fn install(&self) -> Result<(), SeccompError> {
        let default = action(&self.default_action, self.default_errno_ret)?;
        let mut ctx = ScmpFilterContext::new(default).map_err(load_error("creating the filter"))?;
        ctx.set_ctl_nnp(false)
            .map_err(load_error("leaving no_new_privs to the process"))?;
        for a in &self.architectures {
            let a = arch(a)?;
            if a != ScmpArch::native() {
                // An ABI the kernel or libseccomp lacks here is not an error (docker).
                let _ = ctx.add_arch(a);
            }
        }
        for r in &self.syscalls {
            let act = action(&r.action, r.errno_ret)?;
            // libseccomp refuses a rule that repeats the default action.
            if act == default {
                continue;
            }
            let args = r.args.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
            // Two comparisons of the same argument are alternatives (docker): one rule each.
            let same_index = r
                .args
                .iter()
                .enumerate()
                .any(|(i, a)| r.args[..i].iter().any(|b| b.index == a.index));
            for name in &r.names {
                let Ok(sys) = ScmpSyscall::from_name(name) else {
                    continue;
                };
                let step = || format!("rule for {name}");
                if same_index {
                    for a in &args {
                        ctx.add_rule_conditional(act, sys, std::slice::from_ref(a))
                            .map_err(load_error(step()))?;
                    }
                } else {
                    ctx.add_rule_conditional(act, sys, &args)
                        .map_err(load_error(step()))?;
                }
            }
        }
        ctx.load().map_err(load_error("loading"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_validates_and_follows_caps() {
        let plain = Profile::docker_default(&[]);
        plain.validate().unwrap();
        let names = |p: &Profile| -> Vec<String> {
            p.syscalls
                .iter()
                .filter(|r| r.action == "SCMP_ACT_ALLOW")
                .flat_map(|r| r.names.clone())
                .collect()
        };
        for denied in [
            "mount",
            "unshare",
            "keyctl",
            "add_key",
            "setns",
            "io_uring_setup",
        ] {
            assert!(!names(&plain).iter().any(|n| n == denied), "{denied}");
        }
        assert!(names(&plain).iter().any(|n| n == "mkdir"));
        let admin = Profile::docker_default(&["CAP_SYS_ADMIN".into()]);
        assert!(names(&admin).iter().any(|n| n == "mount"));
        assert!(!admin.syscalls.iter().any(|r| r.names == ["clone3"]));
    }

    #[test]
    fn docker_json_reads_and_bad_names_are_refused() {
        let p = Profile::parse(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
                "args":[],"comment":"x","includes":{"caps":["CAP_CHOWN"]}}]}"#,
        )
        .unwrap();
        assert_eq!(p.syscalls[0].errno_ret, Some(1));
        assert!(p.for_caps(&[]).syscalls.is_empty());
        assert_eq!(p.for_caps(&["CAP_CHOWN".into()]).syscalls.len(), 1);
        assert!(matches!(
            Profile::parse(br#"{"defaultAction":"SCMP_ACT_NOPE"}"#),
            Err(SeccompError::Action(a)) if a == "SCMP_ACT_NOPE"
        ));
        assert!(matches!(
            Profile::parse(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ALLOW","args":[{"index":9,"op":"SCMP_CMP_EQ"}]}]}"#),
            Err(SeccompError::ArgIndex(9))
        ));
        assert!(matches!(Profile::parse(b"{"), Err(SeccompError::Decode(_))));
    }

    #[test]
    fn oci_seccomp_converts() {
        let oci: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X32"],
                "syscalls":[{"names":["clone"],"action":"SCMP_ACT_ALLOW",
                "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        )
        .unwrap();
        let p = Profile::from_oci(&oci).unwrap();
        assert_eq!(p.default_errno_ret, Some(38));
        assert_eq!(p.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]);
        assert_eq!(p.syscalls[0].args[0].op, "SCMP_CMP_MASKED_EQ");
        assert_eq!(p.syscalls[0].args[0].value, 0x7E02_0000);
    }
}
