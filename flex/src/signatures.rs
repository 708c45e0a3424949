//! What is on a device, read the way `blkid -p` probes it: filesystem superblocks (TYPE) and
//! partition tables (PTTYPE). The decision to format is taken from this alone.

/// Something found on the device that makes it not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Filesystem(String),
    PartitionTable(String),
    /// Non-zero data where we looked, of no known kind: never blank.
    Data,
}

impl Found {
    pub fn describe(&self) -> String {
        match self {
            Found::Filesystem(t) => format!("a {t} filesystem"),
            Found::PartitionTable(t) => format!("a {t} partition table"),
            Found::Data => "data of an unknown kind".into(),
        }
    }
}

/// How many bytes from the start of the device `probe` needs (the btrfs superblock is at 64 KiB,
/// ISO 9660's at 32 KiB).
pub const PROBE_BYTES: usize = 0x10000 + 0x1000;

fn at(buf: &[u8], offset: usize, magic: &[u8]) -> bool {
    buf.get(offset..offset + magic.len()) == Some(magic)
}

/// Probes the first [`PROBE_BYTES`] of a device. `None`: blank (all zeros where anything lives).
pub fn probe(buf: &[u8]) -> Option<Found> {
    if at(buf, 0x438, &[0x53, 0xEF]) {
        return Some(Found::Filesystem("ext4".into()));
    }
    if at(buf, 0, b"XFSB") {
        return Some(Found::Filesystem("xfs".into()));
    }
    if at(buf, 0x10040, b"_BHRfS_M") {
        return Some(Found::Filesystem("btrfs".into()));
    }
    if at(buf, 0, b"LUKS\xba\xbe") {
        return Some(Found::Filesystem("crypto_LUKS".into()));
    }
    if at(buf, 4086, b"SWAPSPACE2") || at(buf, 4086, b"SWAP-SPACE") {
        return Some(Found::Filesystem("swap".into()));
    }
    if at(buf, 0x8001, b"CD001") {
        return Some(Found::Filesystem("iso9660".into()));
    }
    if at(buf, 0x36, b"FAT") || at(buf, 0x52, b"FAT32") {
        return Some(Found::Filesystem("vfat".into()));
    }
    if at(buf, 3, b"NTFS    ") {
        return Some(Found::Filesystem("ntfs".into()));
    }
    if at(buf, 512, b"EFI PART") {
        return Some(Found::PartitionTable("gpt".into()));
    }
    if at(buf, 510, &[0x55, 0xAA]) {
        return Some(Found::PartitionTable("dos".into()));
    }
    // No known signature: blank only if the places signatures live are all zeros.
    let head = &buf[..buf.len().min(PROBE_BYTES)];
    if head.iter().any(|b| *b != 0) {
        return Some(Found::Data);
    }
    None
}

/// Maps `blkid -p -o export` output to what it found (ext2/ext3 count as the ext4 family).
pub fn from_blkid(output: &str) -> Option<Found> {
    let field = |k: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::trim)
    };
    if let Some(t) = field("TYPE") {
        let t = if matches!(t, "ext2" | "ext3") {
            "ext4"
        } else {
            t
        };
        return Some(Found::Filesystem(t.to_string()));
    }
    if let Some(t) = field("PTTYPE") {
        return Some(Found::PartitionTable(t.to_string()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; PROBE_BYTES]
    }

    #[test]
    fn signatures_are_found() {
        assert_eq!(probe(&blank()), None);
        let mut b = blank();
        b[0x438] = 0x53;
        b[0x439] = 0xEF;
        assert_eq!(probe(&b), Some(Found::Filesystem("ext4".into())));
        let mut b = blank();
        b[..4].copy_from_slice(b"XFSB");
        assert_eq!(probe(&b), Some(Found::Filesystem("xfs".into())));
        let mut b = blank();
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        assert_eq!(probe(&b), Some(Found::Filesystem("btrfs".into())));
        let mut b = blank();
        b[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(probe(&b), Some(Found::PartitionTable("gpt".into())));
        let mut b = blank();
        b[510] = 0x55;
        b[511] = 0xAA;
        assert_eq!(probe(&b), Some(Found::PartitionTable("dos".into())));
        let mut b = blank();
        b[100] = 1;
        assert_eq!(probe(&b), Some(Found::Data));
    }

    #[test]
    fn blkid_output() {
        assert_eq!(
            from_blkid("DEVNAME=/dev/sdc\nUUID=x\nTYPE=xfs\n"),
            Some(Found::Filesystem("xfs".into()))
        );
        assert_eq!(
            from_blkid("DEVNAME=/dev/sdc\nPTUUID=x\nPTTYPE=gpt\n"),
            Some(Found::PartitionTable("gpt".into()))
        );
        assert_eq!(
            from_blkid("TYPE=zfs_member\n"),
            Some(Found::Filesystem("zfs_member".into()))
        );
        assert_eq!(from_blkid(""), None);
    }
}
