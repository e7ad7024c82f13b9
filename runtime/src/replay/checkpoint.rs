//! The replay checkpoint: the journal position after the last record a replay finished with,
//! as one line `SEGMENT OFFSET`, replaced atomically (written beside, synced, renamed).

use std::io::Write as _;
use std::path::Path;

use crate::journal::Position;

/// The saved position, or the start of the journal when there is no checkpoint file.
pub fn load(path: &Path) -> Result<Position, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Position::START),
        Err(e) => return Err(format!("--checkpoint {}: {e}", path.display())),
    };
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(segment)), Some(Ok(offset)), None) => Ok(Position { segment, offset }),
        _ => Err(format!(
            "--checkpoint {}: not a replay checkpoint (one line: segment and offset); remove it to replay from the start",
            path.display()
        )),
    }
}

pub fn save(path: &Path, position: Position) -> Result<(), String> {
    let error = |e: std::io::Error| format!("cannot save the checkpoint {}: {e}", path.display());
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    writeln!(file, "{} {}", position.segment, position.offset).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_and_loaded() {
        let dir = std::env::temp_dir().join(format!("cqlmirror-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replay.checkpoint");
        assert_eq!(load(&path).unwrap(), Position::START);
        let at = Position {
            segment: 3,
            offset: 4096,
        };
        save(&path, at).unwrap();
        assert_eq!(load(&path).unwrap(), at);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load(&path).unwrap_err().contains("--checkpoint"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
