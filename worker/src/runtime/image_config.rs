//! A process's effective command, environment, working directory and user, from its spec and
//! (for a pod with an `image`) the image's config, with Kubernetes' rules. Pure.
//!
//! - `command` replaces the image's `Entrypoint`; the image's `Cmd` is then dropped unless
//!   `args` is set.
//! - `args` replaces the image's `Cmd`.
//! - neither: `Entrypoint` + `Cmd`.
//! - the image's `Env` lies under the process's `env` (the process wins).
//! - `workdir` defaults to the image's `WorkingDir`; `user` (and `group`) to its `User`
//!   (`uid`, `name`, `uid:gid`, `name:group`).
//!
//! Without an image, `args` are appended to `command`.

use bramble_wire::objects::{IdRef, ImageConfig, ProcessSpec};

/// `s` as a user or group reference: a number below 2^32 − 1, else a name.
fn id_ref(s: &str) -> IdRef {
    match s.parse::<u32>() {
        Ok(n) if n != u32::MAX => IdRef::Id(n),
        _ => IdRef::Name(s.to_string()),
    }
}

/// The image's `User` as (user, group); `None` when unset or empty.
pub fn parse_user(user: &str) -> Option<(IdRef, Option<IdRef>)> {
    let user = user.trim();
    if user.is_empty() {
        return None;
    }
    match user.split_once(':') {
        Some((u, g)) if !u.is_empty() => Some((id_ref(u), (!g.is_empty()).then(|| id_ref(g)))),
        Some((_, g)) if !g.is_empty() => Some((IdRef::Id(0), Some(id_ref(g)))),
        Some(_) => None,
        None => Some((id_ref(user), None)),
    }
}

/// Process `p` of a pod as it runs: `image` is the config of the pod's image, if it has one
/// (`reference` names it in errors). The result has an empty `args` and a non-empty `command`.
pub fn resolve_process(
    p: &ProcessSpec,
    image: Option<(&str, &ImageConfig)>,
) -> Result<ProcessSpec, String> {
    let mut out = p.clone();
    out.args = Vec::new();
    let Some((reference, img)) = image else {
        out.command = p.command.iter().chain(&p.args).cloned().collect();
        return Ok(out);
    };
    out.command = if !p.command.is_empty() {
        p.command.iter().chain(&p.args).cloned().collect()
    } else {
        let rest = if p.args.is_empty() { &img.cmd } else { &p.args };
        img.entrypoint.iter().chain(rest).cloned().collect()
    };
    if out.command.is_empty() {
        return Err(format!(
            "process {}: image {reference} has neither an Entrypoint nor a Cmd: give the process a `command`",
            p.name
        ));
    }
    let mut env: Vec<(String, String)> = img
        .env
        .iter()
        .filter(|(k, _)| !p.env.iter().any(|(x, _)| x == k))
        .cloned()
        .collect();
    env.extend(p.env.iter().cloned());
    out.env = env;
    if out.workdir.is_none() {
        out.workdir = img.workdir.clone().filter(|w| !w.is_empty());
    }
    if out.user.is_none()
        && let Some((user, group)) = img.user.as_deref().and_then(parse_user)
    {
        out.user = Some(user);
        if out.group.is_none() {
            out.group = group;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(command: &[&str], args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            name: "main".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn img() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/ep".into(), "-x".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("MODE".into(), "image".into()),
            ],
            workdir: Some("/app".into()),
            user: Some("1000:1001".into()),
            exposed_ports: vec!["80/tcp".into()],
        }
    }

    fn cmd(p: &ProcessSpec, image: Option<&ImageConfig>) -> Vec<String> {
        resolve_process(p, image.map(|i| ("reg/app:1", i)))
            .unwrap()
            .command
    }

    #[test]
    fn kubernetes_command_and_args_rules() {
        let i = img();
        assert_eq!(
            cmd(&proc(&[], &[]), Some(&i)),
            ["/ep", "-x", "serve", "--port=80"]
        );
        assert_eq!(cmd(&proc(&["/bin/sh"], &[]), Some(&i)), ["/bin/sh"]);
        assert_eq!(
            cmd(&proc(&[], &["debug"]), Some(&i)),
            ["/ep", "-x", "debug"]
        );
        assert_eq!(
            cmd(&proc(&["/bin/sh"], &["-c", "x"]), Some(&i)),
            ["/bin/sh", "-c", "x"]
        );
        // No image: args are appended.
        assert_eq!(
            cmd(&proc(&["/bin/echo"], &["a", "b"]), None),
            ["/bin/echo", "a", "b"]
        );
        assert!(
            resolve_process(&proc(&["/x"], &["y"]), None)
                .unwrap()
                .args
                .is_empty()
        );
        // Only Cmd.
        let only_cmd = ImageConfig {
            cmd: vec!["/bin/sh".into()],
            ..Default::default()
        };
        assert_eq!(cmd(&proc(&[], &[]), Some(&only_cmd)), ["/bin/sh"]);
        assert_eq!(
            cmd(&proc(&[], &["/bin/true"]), Some(&only_cmd)),
            ["/bin/true"]
        );
    }

    #[test]
    fn an_image_without_entrypoint_or_cmd_needs_a_command() {
        let empty = ImageConfig::default();
        let e = resolve_process(&proc(&[], &[]), Some(("reg/app:1", &empty))).unwrap_err();
        assert!(e.contains("reg/app:1") && e.contains("`command`"), "{e}");
        assert!(resolve_process(&proc(&["/x"], &[]), Some(("reg/app:1", &empty))).is_ok());
    }

    #[test]
    fn env_workdir_and_user_default_from_the_image() {
        let i = img();
        let mut p = proc(&[], &[]);
        p.env = vec![("MODE".into(), "pod".into()), ("OWN".into(), "1".into())];
        let r = resolve_process(&p, Some(("r", &i))).unwrap();
        assert_eq!(
            r.env,
            vec![
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("MODE".to_string(), "pod".to_string()),
                ("OWN".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(r.workdir.as_deref(), Some("/app"));
        assert_eq!(r.user, Some(IdRef::Id(1000)));
        assert_eq!(r.group, Some(IdRef::Id(1001)));
        // The process's own settings win.
        p.workdir = Some("/w".into());
        p.user = Some(IdRef::Name("svc".into()));
        let r = resolve_process(&p, Some(("r", &i))).unwrap();
        assert_eq!(r.workdir.as_deref(), Some("/w"));
        assert_eq!(r.user, Some(IdRef::Name("svc".into())));
        assert_eq!(r.group, None);
        // Without an image nothing is added.
        let r = resolve_process(&proc(&["/x"], &[]), None).unwrap();
        assert!(r.env.is_empty() && r.workdir.is_none() && r.user.is_none());
    }

    #[test]
    fn user_forms() {
        assert_eq!(parse_user("0"), Some((IdRef::Id(0), None)));
        assert_eq!(
            parse_user("nobody"),
            Some((IdRef::Name("nobody".into()), None))
        );
        assert_eq!(
            parse_user("app:staff"),
            Some((IdRef::Name("app".into()), Some(IdRef::Name("staff".into()))))
        );
        assert_eq!(
            parse_user("1000:1000"),
            Some((IdRef::Id(1000), Some(IdRef::Id(1000))))
        );
        assert_eq!(parse_user("1000:"), Some((IdRef::Id(1000), None)));
        assert_eq!(parse_user(""), None);
        assert_eq!(parse_user(":"), None);
        assert_eq!(
            parse_user("4294967295"),
            Some((IdRef::Name("4294967295".into()), None))
        );
    }
}
