//! immudb's storage settings that the chart manages, as one map from setting to value so that
//! diffing, validation and display are written once. A setting absent from the desired map is not
//! managed: the hook neither sends nor compares it. A leaf: imports nothing of the crate.

use std::collections::BTreeMap;
use std::fmt;

/// The settings the chart exposes, with immudb's names (the values file uses the same names).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    SyncFrequency,
    MaxConcurrency,
    RetentionPeriod,
    TruncationFrequency,
    FileSize,
    MaxKeyLen,
    MaxValueLen,
    MaxTxEntries,
    EmbeddedValues,
    PreallocFiles,
}

/// How a setting's value is written and read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Milliseconds, written as a duration ("5ms", "24h").
    Duration,
    Count,
    Bytes,
    Flag,
}

/// immudb's own defaults (server 1.10/1.11), used where a rule needs a value the chart leaves unmanaged.
pub const DEFAULT_MAX_CONCURRENCY: u64 = 30;
const MAX_KEY_LEN: u64 = 1024;
const MAX_FILE_SIZE: u64 = (1 << 31) - 1;
const HOUR_MS: u64 = 3_600_000;

impl Setting {
    pub const ALL: [Setting; 10] = [
        Setting::SyncFrequency,
        Setting::MaxConcurrency,
        Setting::RetentionPeriod,
        Setting::TruncationFrequency,
        Setting::FileSize,
        Setting::MaxKeyLen,
        Setting::MaxValueLen,
        Setting::MaxTxEntries,
        Setting::EmbeddedValues,
        Setting::PreallocFiles,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setting::SyncFrequency => "syncFrequency",
            Setting::MaxConcurrency => "maxConcurrency",
            Setting::RetentionPeriod => "retentionPeriod",
            Setting::TruncationFrequency => "truncationFrequency",
            Setting::FileSize => "fileSize",
            Setting::MaxKeyLen => "maxKeyLen",
            Setting::MaxValueLen => "maxValueLen",
            Setting::MaxTxEntries => "maxTxEntries",
            Setting::EmbeddedValues => "embeddedValues",
            Setting::PreallocFiles => "preallocFiles",
        }
    }

    pub fn from_name(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn kind(self) -> Kind {
        match self {
            Setting::SyncFrequency | Setting::RetentionPeriod | Setting::TruncationFrequency => {
                Kind::Duration
            }
            Setting::MaxConcurrency | Setting::MaxTxEntries => Kind::Count,
            Setting::FileSize | Setting::MaxKeyLen | Setting::MaxValueLen => Kind::Bytes,
            Setting::EmbeddedValues | Setting::PreallocFiles => Kind::Flag,
        }
    }

    /// immudb fixes these when a database is created and refuses them in UpdateDatabaseV2, even
    /// with an unchanged value.
    pub fn is_fixed_at_creation(self) -> bool {
        matches!(
            self,
            Setting::FileSize
                | Setting::MaxKeyLen
                | Setting::MaxValueLen
                | Setting::MaxTxEntries
                | Setting::EmbeddedValues
                | Setting::PreallocFiles
        )
    }

    /// The values immudb accepts; the rule is returned as text for the error message.
    pub fn check(self, value: u64) -> Result<(), String> {
        let in_range = |low: u64, high: u64, rule: &str| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(rule.to_string())
            }
        };
        match self {
            Setting::SyncFrequency => in_range(0, HOUR_MS, "must be between 0ms and 1h"),
            Setting::RetentionPeriod if value == 0 => Ok(()),
            Setting::RetentionPeriod => in_range(
                24 * HOUR_MS,
                u64::MAX,
                "must be 0 (keep everything) or at least 24h, immudb's minimum",
            ),
            Setting::TruncationFrequency => {
                in_range(HOUR_MS, u64::MAX, "must be at least 1h, immudb's minimum")
            }
            Setting::MaxConcurrency | Setting::MaxTxEntries | Setting::MaxValueLen => {
                in_range(1, u64::from(u32::MAX), "must be between 1 and 4294967295")
            }
            Setting::MaxKeyLen => in_range(1, MAX_KEY_LEN, "must be between 1 and 1024 bytes"),
            Setting::FileSize => in_range(
                1,
                MAX_FILE_SIZE - 1,
                "must be between 1 byte and 2147483646 bytes (just under 2 GiB)",
            ),
            Setting::EmbeddedValues | Setting::PreallocFiles => in_range(0, 1, "must be a boolean"),
        }
    }

    /// The value as the values file writes it.
    pub fn display(self, value: u64) -> String {
        match self.kind() {
            Kind::Duration => format_duration(value),
            Kind::Flag => (value != 0).to_string(),
            Kind::Count | Kind::Bytes => value.to_string(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const UNITS: [(&str, u64); 5] = [
    ("d", 24 * HOUR_MS),
    ("h", HOUR_MS),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A duration flag ("500ms", "10s", "2m"), for clap's value parser.
pub fn duration_flag(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text).map(std::time::Duration::from_millis)
}

/// "5ms", "30s", "24h", "7d" (one unit) → milliseconds; "0" is zero.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, factor)| *factor);
    match (digits.parse::<u64>(), factor) {
        (Ok(n), Some(factor)) => n
            .checked_mul(factor)
            .ok_or_else(|| "is too long".to_string()),
        _ => Err("must be a whole number with one unit: ms, s, m, h or d (e.g. 5ms, 24h)".into()),
    }
}

/// Milliseconds in the largest unit that divides them exactly.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    let (unit, factor) = UNITS
        .iter()
        .find(|(_, factor)| ms.is_multiple_of(*factor))
        .expect("every value divides by 1 ms");
    format!("{}{unit}", ms / factor)
}

/// Setting → value (durations in milliseconds, flags as 0/1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageSettings(BTreeMap<Setting, u64>);

/// A setting fixed at creation whose existing value differs from the desired one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedSettingDiffers {
    pub setting: Setting,
    pub have: u64,
    pub want: u64,
}

impl fmt::Display for FixedSettingDiffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} but {} is asked for; immudb fixes it when a database is created (keep the old value, or create a new database)",
            self.setting,
            self.setting.display(self.have),
            self.setting.display(self.want)
        )
    }
}

impl StorageSettings {
    pub fn get(&self, setting: Setting) -> Option<u64> {
        self.0.get(&setting).copied()
    }

    pub fn set(&mut self, setting: Setting, value: u64) {
        self.0.insert(setting, value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (Setting, u64)> + '_ {
        self.0.iter().map(|(s, v)| (*s, *v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self` with every setting `overrides` manages replaced.
    pub fn overlaid(&self, overrides: &StorageSettings) -> StorageSettings {
        let mut merged = self.clone();
        merged.0.extend(overrides.iter());
        merged
    }

    /// The concurrency a database commits with: its managed value or immudb's default.
    pub fn max_concurrency(&self) -> u64 {
        self.get(Setting::MaxConcurrency)
            .unwrap_or(DEFAULT_MAX_CONCURRENCY)
    }

    /// Settings fixed at creation that `observed` holds with another value.
    pub fn fixed_differences(&self, observed: &StorageSettings) -> Vec<FixedSettingDiffers> {
        self.iter()
            .filter(|(setting, _)| setting.is_fixed_at_creation())
            .filter_map(|(setting, want)| match observed.get(setting) {
                Some(have) if have != want => Some(FixedSettingDiffers {
                    setting,
                    have,
                    want,
                }),
                _ => None,
            })
            .collect()
    }

    /// The changeable settings whose desired value `observed` does not hold: what an update sends.
    pub fn changes_from(&self, observed: &StorageSettings) -> StorageSettings {
        StorageSettings(
            self.iter()
                .filter(|(setting, want)| {
                    !setting.is_fixed_at_creation() && observed.get(*setting) != Some(*want)
                })
                .collect(),
        )
    }
}

/// `syncFrequency=1ms, retentionPeriod=2d`, as the values file writes them.
impl fmt::Display for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self
            .iter()
            .map(|(setting, value)| format!("{setting}={}", setting.display(value)))
            .collect();
        f.write_str(&pairs.join(", "))
    }
}

impl FromIterator<(Setting, u64)> for StorageSettings {
    fn from_iter<I: IntoIterator<Item = (Setting, u64)>>(iter: I) -> Self {
        StorageSettings(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(Setting, u64)]) -> StorageSettings {
        pairs.iter().copied().collect()
    }

    #[test]
    fn durations_parse_and_print_in_one_unit() {
        assert_eq!(parse_duration("5ms"), Ok(5));
        assert_eq!(parse_duration("24h"), Ok(86_400_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "5", "ms", "1.5s", "5 ms", "-1s", "5w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(86_400_000), "1d");
        assert_eq!(format_duration(90_000), "90s");
        assert_eq!(format_duration(5), "5ms");
        for name in Setting::ALL.map(Setting::name) {
            assert_eq!(Setting::from_name(name).unwrap().name(), name);
        }
    }

    #[test]
    fn immudb_limits_are_enforced() {
        assert!(Setting::RetentionPeriod.check(0).is_ok());
        assert!(Setting::RetentionPeriod.check(23 * HOUR_MS).is_err());
        assert!(Setting::RetentionPeriod.check(24 * HOUR_MS).is_ok());
        assert!(Setting::TruncationFrequency.check(HOUR_MS - 1).is_err());
        assert!(Setting::MaxKeyLen.check(1025).is_err());
        assert!(Setting::MaxConcurrency.check(0).is_err());
        assert!(Setting::FileSize.check(MAX_FILE_SIZE).is_err());
        assert!(Setting::FileSize.check(MAX_FILE_SIZE - 1).is_ok());
    }

    #[test]
    fn only_changed_changeable_settings_are_sent() {
        let desired = settings(&[
            (Setting::SyncFrequency, 1),
            (Setting::MaxConcurrency, 30),
            (Setting::FileSize, 1 << 20),
        ]);
        let observed = settings(&[
            (Setting::SyncFrequency, 20),
            (Setting::MaxConcurrency, 30),
            (Setting::FileSize, 1 << 29),
            (Setting::MaxKeyLen, 1024),
        ]);
        assert_eq!(
            desired.changes_from(&observed),
            settings(&[(Setting::SyncFrequency, 1)])
        );
        let differs = desired.fixed_differences(&observed);
        assert_eq!(differs.len(), 1);
        assert!(differs[0]
            .to_string()
            .starts_with("fileSize is 536870912 but 1048576"));
        assert!(desired.changes_from(&desired).is_empty());
    }

    #[test]
    fn overrides_replace_defaults_per_setting() {
        let defaults = settings(&[(Setting::SyncFrequency, 5), (Setting::MaxConcurrency, 30)]);
        let merged = defaults.overlaid(&settings(&[(Setting::SyncFrequency, 20)]));
        assert_eq!(
            merged,
            settings(&[(Setting::SyncFrequency, 20), (Setting::MaxConcurrency, 30)])
        );
        assert_eq!(StorageSettings::default().max_concurrency(), 30);
    }
}
