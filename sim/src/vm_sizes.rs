//! Data-disk limits of the VM sizes the simulator knows (from Azure's published size tables).

const SIZES: &[(&str, u32)] = &[
    ("Standard_B2s", 4),
    ("Standard_B2ms", 4),
    ("Standard_D2s_v3", 4),
    ("Standard_D4s_v3", 8),
    ("Standard_D8s_v3", 16),
    ("Standard_D16s_v3", 32),
    ("Standard_D2s_v5", 4),
    ("Standard_D4s_v5", 8),
    ("Standard_DS2_v2", 8),
    ("Standard_DS3_v2", 16),
    ("Standard_E2s_v3", 4),
    ("Standard_E4s_v3", 8),
    ("Standard_F2s_v2", 4),
];

pub fn max_data_disks(size: &str) -> Option<u32> {
    SIZES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(size))
        .map(|(_, m)| *m)
}

pub fn known() -> Vec<&'static str> {
    SIZES.iter().map(|(n, _)| *n).collect()
}
