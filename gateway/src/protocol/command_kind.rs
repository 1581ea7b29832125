//! The command types of the contract (docs/protocol.md, *Command types*): the names the server
//! sends in a command's `type` and collars act on.

use std::fmt;

use super::values::CommandType;

/// What a collar can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Report every few seconds for a while: the pet is lost.
    LiveMode,
    /// The normal reporting interval.
    SetInterval,
    Buzzer,
    Light,
    /// One fix now.
    LocateNow,
    FirmwareUpdate,
}

impl CommandKind {
    pub const ALL: [CommandKind; 6] = [
        CommandKind::LiveMode,
        CommandKind::SetInterval,
        CommandKind::Buzzer,
        CommandKind::Light,
        CommandKind::LocateNow,
        CommandKind::FirmwareUpdate,
    ];

    /// The name on the wire, e.g. `live_mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::LiveMode => "live_mode",
            CommandKind::SetInterval => "set_interval",
            CommandKind::Buzzer => "buzzer",
            CommandKind::Light => "light",
            CommandKind::LocateNow => "locate_now",
            CommandKind::FirmwareUpdate => "firmware_update",
        }
    }

    /// The kind named `s`; `None` for a type this contract does not define.
    pub fn parse(s: &str) -> Option<CommandKind> {
        CommandKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a received command's `type` names, if the contract defines it.
    pub fn of(kind: &CommandType) -> Option<CommandKind> {
        CommandKind::parse(kind.as_str())
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name_and_is_a_valid_command_type() {
        for kind in CommandKind::ALL {
            assert_eq!(CommandKind::parse(kind.as_str()), Some(kind));
            let wire = CommandType::parse(kind.as_str()).unwrap();
            assert_eq!(CommandKind::of(&wire), Some(kind));
        }
        assert_eq!(CommandKind::parse("self_destruct"), None);
        assert_eq!(CommandKind::parse("Buzzer"), None);
    }
}
