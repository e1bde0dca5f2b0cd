//! The container process's command line, environment and working directory
//! from the image config and the Pod's container, with Kubernetes rules:
//!
//! - `command` replaces the image's Entrypoint, `args` replaces its Cmd, and
//!   `command` without `args` drops the Cmd as well;
//! - env is the image's, then the container's (same name: the container
//!   wins, in the image's position);
//! - `$(VAR)` in command, args and env values expands to a variable the
//!   container defines earlier; `$$` is a literal `$`; unknown references
//!   stay as written.

use std::collections::HashMap;

use oci_spec::image::Config as ImageConfig;

use super::spec::{ContainerSpec, EnvVar};

/// containerd's default when an image sets no PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "container {container:?} has nothing to run: neither it (command/args) nor its image (Entrypoint/Cmd) names a program"
    )]
    NoCommand { container: String },
}

/// The argv the container runs.
pub fn argv(
    container: &ContainerSpec,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, ProcessError> {
    let entrypoint = image.and_then(|c| c.entrypoint().as_deref()).unwrap_or(&[]);
    let cmd = image.and_then(|c| c.cmd().as_deref()).unwrap_or(&[]);
    let vars = expansion_map(&container.env);
    let expand_all =
        |list: &[String]| -> Vec<String> { list.iter().map(|s| expand(s, &vars)).collect() };
    let argv: Vec<String> = if !container.command.is_empty() {
        let mut argv = expand_all(&container.command);
        argv.extend(expand_all(&container.args));
        argv
    } else if !container.args.is_empty() {
        let mut argv = entrypoint.to_vec();
        argv.extend(expand_all(&container.args));
        argv
    } else {
        entrypoint.iter().chain(cmd).cloned().collect()
    };
    if argv.is_empty() {
        return Err(ProcessError::NoCommand {
            container: container.name.clone(),
        });
    }
    Ok(argv)
}

/// Defaults the runtime adds before the image's env (either may override).
pub struct EnvDefaults<'a> {
    pub hostname: &'a str,
    pub home: &'a str,
    pub tty: bool,
}

/// `NAME=value` strings for `process.env`.
pub fn env(
    container: &ContainerSpec,
    image: Option<&ImageConfig>,
    defaults: &EnvDefaults<'_>,
) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let set = |merged: &mut Vec<(String, String)>, name: &str, value: String| match merged
        .iter_mut()
        .find(|(n, _)| n == name)
    {
        Some(slot) => slot.1 = value,
        None => merged.push((name.to_string(), value)),
    };
    set(&mut merged, "PATH", DEFAULT_PATH.to_string());
    set(&mut merged, "HOSTNAME", defaults.hostname.to_string());
    set(&mut merged, "HOME", defaults.home.to_string());
    if defaults.tty {
        set(&mut merged, "TERM", "xterm".to_string());
    }
    for entry in image.and_then(|c| c.env().as_deref()).unwrap_or(&[]) {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        set(&mut merged, name, value.to_string());
    }
    let mut defined: HashMap<&str, String> = HashMap::new();
    for var in &container.env {
        let value = expand(&var.value, &defined);
        defined.insert(&var.name, value.clone());
        set(&mut merged, &var.name, value);
    }
    merged
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The working directory: the container's, the image's, or `/`.
pub fn working_dir(container: &ContainerSpec, image: Option<&ImageConfig>) -> String {
    container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            image
                .and_then(|c| c.working_dir().clone())
                .filter(|d| !d.is_empty())
        })
        .unwrap_or_else(|| "/".to_string())
}

/// All of the container's variables, each expanded against the earlier ones
/// (what command and args expand against).
fn expansion_map(env: &[EnvVar]) -> HashMap<&str, String> {
    let mut defined: HashMap<&str, String> = HashMap::new();
    for var in env {
        let value = expand(&var.value, &defined);
        defined.insert(&var.name, value);
    }
    defined
}

/// Kubernetes' `$(VAR)` expansion.
pub fn expand(input: &str, vars: &HashMap<&str, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ConfigBuilder;

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfig {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut builder = ConfigBuilder::default().env(strings(env));
        if !entrypoint.is_empty() {
            builder = builder.entrypoint(strings(entrypoint));
        }
        if !cmd.is_empty() {
            builder = builder.cmd(strings(cmd));
        }
        builder.build().expect("image config")
    }

    fn container(command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "app".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image(&["/entry"], &["--default"], &[]);
        let img = Some(&img);
        assert_eq!(
            argv(&container(&[], &[]), img).expect("ok"),
            ["/entry", "--default"]
        );
        assert_eq!(
            argv(&container(&[], &["-x"]), img).expect("ok"),
            ["/entry", "-x"]
        );
        // command alone drops the image's Cmd too.
        assert_eq!(
            argv(&container(&["/bin/sh"], &[]), img).expect("ok"),
            ["/bin/sh"]
        );
        assert_eq!(
            argv(&container(&["/bin/sh"], &["-c", "true"]), img).expect("ok"),
            ["/bin/sh", "-c", "true"]
        );
        let cmd_only = image(&[], &["/bin/httpd", "-f"], &[]);
        assert_eq!(
            argv(&container(&[], &["-p", "80"]), Some(&cmd_only)).expect("ok"),
            ["-p", "80"],
            "args replace Cmd even when the image has no Entrypoint"
        );
    }

    #[test]
    fn nothing_to_run_is_an_error_naming_the_container() {
        let err = argv(&container(&[], &[]), None).expect_err("empty");
        assert!(err.to_string().contains("\"app\""), "{err}");
    }

    #[test]
    fn env_is_image_then_pod_with_defaults_first() {
        let img = image(&[], &["x"], &["PATH=/img/bin", "A=image", "B=image"]);
        let mut c = container(&[], &[]);
        c.env = vec![EnvVar::new("B", "pod"), EnvVar::new("C", "$(B)-and-$(A)")];
        let defaults = EnvDefaults {
            hostname: "web",
            home: "/root",
            tty: false,
        };
        assert_eq!(
            env(&c, Some(&img), &defaults),
            [
                "PATH=/img/bin",
                "HOSTNAME=web",
                "HOME=/root",
                "A=image",
                "B=pod",
                // $(A) is the image's, which Kubernetes does not expand.
                "C=pod-and-$(A)",
            ]
        );
    }

    #[test]
    fn expansion_matches_kubernetes() {
        let vars: HashMap<&str, String> = [("X", "1".to_string()), ("Y", "two".to_string())].into();
        assert_eq!(expand("$(X)-$(Y)", &vars), "1-two");
        assert_eq!(expand("$$(X)", &vars), "$(X)");
        assert_eq!(expand("$(NOPE) $X $", &vars), "$(NOPE) $X $");
        assert_eq!(expand("$(unterminated", &vars), "$(unterminated");
        let mut c = container(&["echo", "$(X)"], &["$(Y)"]);
        c.env = vec![EnvVar::new("X", "a"), EnvVar::new("Y", "$(X)b")];
        assert_eq!(argv(&c, None).expect("ok"), ["echo", "a", "ab"]);
    }

    #[test]
    fn working_dir_falls_back_to_the_image_then_root() {
        let mut img = image(&[], &["x"], &[]);
        let c = container(&[], &[]);
        assert_eq!(working_dir(&c, Some(&img)), "/");
        img.set_working_dir(Some("/srv".into()));
        assert_eq!(working_dir(&c, Some(&img)), "/srv");
        let mut c2 = c.clone();
        c2.working_dir = Some("/data".into());
        assert_eq!(working_dir(&c2, Some(&img)), "/data");
    }
}
