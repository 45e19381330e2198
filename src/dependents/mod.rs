//! How dependents learn that a new key is in place: the validated *specifications*.
//!
//! Shared by the config file (`[[key.notify]]`) and the command line (`--pid-file`,
//! `--signal`). Sending (reading pid files, scanning `/proc`, talking to systemd,
//! running commands) lives in [`send`]; [`Dependents`] is the daemon's hook that
//! debounces and sends. Nothing else here touches the system.
//!
//! Signals are named, never numbered: numbers differ between Linux and macOS, and a
//! name in a config file says what it does. Only signals a program could sensibly
//! treat as "reload" or "restart" are accepted (no `KILL`, `STOP`, `SEGV`, …).

pub mod debounce;
pub mod send;

pub use debounce::{DEBOUNCE, Dependents, Tally};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The conventional "re-read your configuration" signal.
pub const DEFAULT_SIGNAL: Signal = Signal::Hup;
/// `reload-or-restart` works for every unit: a unit with `ExecReload=` reloads, one
/// without restarts, and either way it ends up with the new key.
pub const DEFAULT_SYSTEMD_ACTION: SystemdAction = SystemdAction::ReloadOrRestart;
/// A reload hook that has not finished after ten seconds is stuck; it is killed so
/// the next refresh is not held up.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// An hour is far beyond any reload hook and bounds how long a stuck one lingers.
pub const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

/// A signal that may be sent to a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Alrm,
    Term,
    Usr1,
    Usr2,
    Winch,
    Cont,
}

impl Signal {
    /// Every accepted signal, for messages.
    pub const ALL: [Signal; 9] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Alrm,
        Signal::Term,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Winch,
        Signal::Cont,
    ];

    /// The short name: `HUP`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Hup => "HUP",
            Self::Int => "INT",
            Self::Quit => "QUIT",
            Self::Alrm => "ALRM",
            Self::Term => "TERM",
            Self::Usr1 => "USR1",
            Self::Usr2 => "USR2",
            Self::Winch => "WINCH",
            Self::Cont => "CONT",
        }
    }

    /// The full name: `SIGHUP`.
    pub fn name(self) -> String {
        format!("SIG{}", self.short_name())
    }
}

/// Why a signal name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an accepted signal; use one of HUP, INT, QUIT, ALRM, TERM, USR1, USR2, WINCH, CONT (with or without SIG)"
)]
pub struct SignalError(String);

impl FromStr for Signal {
    type Err = SignalError;
    /// `HUP`, `SIGHUP`, `hup` and `sighup` all mean SIGHUP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let short = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL
            .into_iter()
            .find(|sig| sig.short_name() == short)
            .ok_or_else(|| SignalError(s.to_owned()))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.short_name())
    }
}

/// What to ask systemd to do with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdAction {
    Reload,
    Restart,
    ReloadOrRestart,
    /// `systemctl kill --signal=SIG UNIT`: every process of the unit gets the signal.
    Signal(Signal),
}

impl FromStr for SystemdAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reload" => Ok(Self::Reload),
            "restart" => Ok(Self::Restart),
            "reload-or-restart" => Ok(Self::ReloadOrRestart),
            other => other.parse::<Signal>().map(Self::Signal).map_err(|_| {
                format!(
                    "{other:?} is not a systemd action; use \"reload\", \"restart\", \"reload-or-restart\" or a signal name such as \"HUP\""
                )
            }),
        }
    }
}

impl fmt::Display for SystemdAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reload => f.write_str("reload"),
            Self::Restart => f.write_str("restart"),
            Self::ReloadOrRestart => f.write_str("reload-or-restart"),
            Self::Signal(sig) => write!(f, "kill --signal={sig}"),
        }
    }
}

/// One validated notification, sent after every sink of a key holds the new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySpec {
    /// Signal the pid written in a file, re-read each time.
    PidFile { path: PathBuf, signal: Signal },
    /// Signal every process whose name is exactly `name`.
    Process { name: String, signal: Signal },
    /// Ask systemd to act on a unit.
    SystemdUnit { unit: String, action: SystemdAction },
    /// Run a program (no shell) with the key name and expiry in its environment,
    /// never the key; killed after `timeout`.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
}

impl fmt::Display for NotifySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PidFile { path, signal } => {
                write!(f, "{signal} to the pid in {}", path.display())
            }
            Self::Process { name, signal } => {
                write!(f, "{signal} to every process named {name:?}")
            }
            Self::SystemdUnit { unit, action } => write!(f, "systemctl {action} {unit}"),
            Self::Command { argv, timeout } => write!(
                f,
                "run {} (timeout {})",
                shell_words(argv),
                crate::clock::duration::format(*timeout)
            ),
        }
    }
}

/// An argv shown the way a shell user would type it (for display only).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,@%+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a systemd unit name: the characters systemd allows, not empty, at most 256
/// bytes. A name without a suffix means `.service`, as for `systemctl`.
pub fn validate_unit_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a systemd unit name (letters, digits and :-_.\\@ only, e.g. \"myapp.service\")"
        ))
    }
}

/// Checks a process name for an exact-name match: not empty, no `/` (it is a name,
/// not a path), no control characters.
pub fn validate_process_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        Err(format!(
            "{name:?} is not a process name (a non-empty name without '/', e.g. \"litellm\")"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name() {
        for (text, sig) in [
            ("HUP", Signal::Hup),
            ("SIGHUP", Signal::Hup),
            ("hup", Signal::Hup),
            ("SIGUSR1", Signal::Usr1),
            ("usr2", Signal::Usr2),
            ("TERM", Signal::Term),
        ] {
            assert_eq!(text.parse::<Signal>(), Ok(sig), "{text}");
        }
        for bad in ["", "KILL", "SIGKILL", "STOP", "9", "SIG", "HUPP", "SIGSEGV"] {
            assert!(bad.parse::<Signal>().is_err(), "{bad}");
        }
        assert_eq!(Signal::Usr1.to_string(), "SIGUSR1");
    }

    #[test]
    fn systemd_actions() {
        assert_eq!("reload".parse(), Ok(SystemdAction::Reload));
        assert_eq!(
            "reload-or-restart".parse(),
            Ok(SystemdAction::ReloadOrRestart)
        );
        assert_eq!("USR1".parse(), Ok(SystemdAction::Signal(Signal::Usr1)));
        assert!("stop".parse::<SystemdAction>().is_err());
        assert!(validate_unit_name("myapp.service").is_ok());
        assert!(validate_unit_name("getty@tty1.service").is_ok());
        assert!(validate_unit_name("my app").is_err());
        assert!(validate_unit_name("").is_err());
    }

    #[test]
    fn display() {
        let cmd = NotifySpec::Command {
            argv: vec!["/bin/app-reload".into(), "a b".into()],
            timeout: Duration::from_secs(10),
        };
        assert_eq!(cmd.to_string(), "run /bin/app-reload 'a b' (timeout 10s)");
    }
}
