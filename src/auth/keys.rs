//! Virtual keys (`conduit-hubs.md` §3.1): their format, their SHA-256 hash, generating them,
//! the file-backed [`KeyStore`], and the parser for Conduit's Redis `vkey:<hash>` entity.
//!
//! A virtual key is `condt_` plus 32 characters of `[A-Za-z0-9]`. Only the SHA-256 lowercase
//! hex of the whole key string is ever stored; the raw key exists in memory only while a
//! request is checked, and is handed out once by [`add_key`].
//!
//! The key file is JSON, `{"keys":[{"id":1,"name":"dev","hash":"<sha256 hex>","enabled":true,
//! "expires_at":null,"admin":false}]}` (`expires_at` in unix seconds). Unknown fields are an
//! error, so a typo is never a silently ignored setting. [`add_key`] rewrites it atomically
//! with mode 0600; it assumes one writer at a time (an operator's CLI), not concurrent ones.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, Principal};

/// Every virtual key starts with this.
const PREFIX: &str = "condt_";

/// Characters after [`PREFIX`].
const BODY_LEN: usize = 32;

/// Length of a SHA-256 digest in lowercase hex.
const HASH_LEN: usize = 64;

/// Draws [`generate_virtual_key`] makes before giving up. One 32-byte draw leaves at least 32
/// alphanumerics unless 12 of its 43 base64 digits are `+` or `/` (probability below 1e-9),
/// so reaching this bound means a broken random source.
const MAX_DRAWS: usize = 64;

/// SHA-256 of `key` (its UTF-8 bytes), as 64 lowercase hex digits: the form keys are stored
/// and looked up in.
pub fn hash_key(key: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(HASH_LEN);
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Whether `token` has the virtual-key shape: `condt_` followed by exactly 32 ASCII letters
/// or digits.
pub fn is_virtual_key(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|body| {
        body.len() == BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A new virtual key, generated as Conduit does (`VirtualKeyUtilities.GenerateSecureKey`): 32
/// bytes from the OS CSPRNG, standard base64, `+`, `/` and `=` removed, the first 32
/// characters kept, `condt_` in front. A draw that leaves fewer than 32 characters is
/// discarded and drawn again.
///
/// # Errors
/// [`AuthError::Store`] when the OS random source fails.
pub fn generate_virtual_key() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    for _ in 0..MAX_DRAWS {
        getrandom::fill(&mut bytes)
            .map_err(|_| store_error("the operating system's random source failed"))?;
        let body: String = STANDARD
            .encode(bytes)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(BODY_LEN)
            .collect();
        if body.len() == BODY_LEN {
            return Ok(format!("{PREFIX}{body}"));
        }
    }
    Err(store_error(
        "the operating system's random source returned unusable bytes",
    ))
}

/// One key as the store knows it: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The key's id; hub groups are named `vkey-{id}`.
    pub id: i64,
    /// Display name (Conduit's `KeyName`).
    pub name: String,
    /// SHA-256 of the key, 64 lowercase hex digits ([`hash_key`]).
    pub hash: String,
    /// A disabled key is refused with [`AuthError::Disabled`].
    pub enabled: bool,
    /// When the key stops working, in unix seconds; from that second on it is refused with
    /// [`AuthError::Expired`]. `None` (or absent): never.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Whether the key may use admin-only hubs. Absent: `false`.
    #[serde(default)]
    pub admin: bool,
}

/// The key file's top level.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<KeyRecord>,
}

/// The file-backed key store: records in file order plus an index by hash for O(1) lookups.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    records: Vec<KeyRecord>,
    by_hash: HashMap<String, usize>,
}

impl KeyStore {
    /// A store with no keys (only admin keys can authenticate).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The store from these records, in this order. When two records share a hash, the later
    /// one is the one lookups find ([`Self::load`] refuses such files).
    pub fn from_records(records: Vec<KeyRecord>) -> Self {
        let by_hash = records
            .iter()
            .enumerate()
            .map(|(index, record)| (record.hash.clone(), index))
            .collect();
        Self { records, by_hash }
    }

    /// Reads the key file at `path`. A missing file is an empty store, so a fresh deployment
    /// needs no file. Hashes are normalised to lowercase.
    ///
    /// # Errors
    /// [`AuthError::Store`] when the file cannot be read, is not valid key-file JSON, or has a
    /// record whose hash is not 64 hex digits, or two records with the same id or hash.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(error) => return Err(store_error(format_args!("{}: {error}", path.display()))),
        };
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|error| store_error(format_args!("{}: {error}", path.display())))?;
        let mut ids = HashSet::with_capacity(file.keys.len());
        let mut hashes = HashSet::with_capacity(file.keys.len());
        let mut records = file.keys;
        for record in &mut records {
            // The text is not echoed: a raw key pasted into `hash` must not reach a log.
            if !is_hash(&record.hash) {
                return Err(store_error(format_args!(
                    "{}: key {} has a hash that is not 64 hex digits",
                    path.display(),
                    record.id
                )));
            }
            record.hash.make_ascii_lowercase();
            if !ids.insert(record.id) {
                return Err(store_error(format_args!(
                    "{}: two keys have id {}",
                    path.display(),
                    record.id
                )));
            }
            if !hashes.insert(record.hash.clone()) {
                return Err(store_error(format_args!(
                    "{}: key {} has the same hash as an earlier key",
                    path.display(),
                    record.id
                )));
            }
        }
        Ok(Self::from_records(records))
    }

    /// The records, in file order.
    pub fn records(&self) -> &[KeyRecord] {
        &self.records
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Who `token` is at `now_unix` (unix seconds).
    ///
    /// A token whose hash is in `admin_hashes` (hex, any case) is [`Principal::AdminKey`],
    /// whatever its shape. Otherwise it must be a virtual key found in the store, enabled and
    /// not expired (`expires_at <= now_unix` is expired): [`presented_key`], then
    /// [`KeyRecord::principal`].
    ///
    /// # Errors
    /// [`AuthError::MissingToken`] for an empty token; [`AuthError::Malformed`],
    /// [`AuthError::UnknownKey`], [`AuthError::Disabled`], [`AuthError::Expired`] as above.
    pub fn authenticate(
        &self,
        token: &str,
        admin_hashes: &[String],
        now_unix: u64,
    ) -> Result<Principal, AuthError> {
        let PresentedKey::Virtual { hash } = presented_key(token, admin_hashes)? else {
            return Ok(Principal::AdminKey);
        };
        self.by_hash
            .get(&hash)
            .and_then(|&index| self.records.get(index))
            .ok_or(AuthError::UnknownKey)?
            .principal(now_unix)
    }
}

/// What a presented token is, before any store is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedKey {
    /// One of the configured admin keys.
    Admin,
    /// A token shaped like a virtual key; the store decides the rest.
    Virtual {
        /// Its SHA-256, lowercase hex ([`hash_key`]).
        hash: String,
    },
}

/// The checks every key store makes first: a token whose hash is in `admin_hashes` (hex, any
/// case) is an admin key, whatever its shape; anything else must be shaped like a virtual key.
///
/// # Errors
/// [`AuthError::MissingToken`] for an empty token, [`AuthError::Malformed`] for a token that
/// is neither an admin key nor shaped like a virtual key.
pub fn presented_key(token: &str, admin_hashes: &[String]) -> Result<PresentedKey, AuthError> {
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    let hash = hash_key(token);
    if admin_hashes
        .iter()
        .any(|admin| admin.trim().eq_ignore_ascii_case(&hash))
    {
        return Ok(PresentedKey::Admin);
    }
    if !is_virtual_key(token) {
        return Err(AuthError::Malformed);
    }
    Ok(PresentedKey::Virtual { hash })
}

impl KeyRecord {
    /// Who this key is at `now_unix` (unix seconds): its principal when it is enabled and not
    /// expired (`expires_at <= now_unix` is expired).
    ///
    /// # Errors
    /// [`AuthError::Disabled`], [`AuthError::Expired`].
    pub fn principal(&self, now_unix: u64) -> Result<Principal, AuthError> {
        if !self.enabled {
            return Err(AuthError::Disabled);
        }
        if self.expires_at.is_some_and(|expiry| expiry <= now_unix) {
            return Err(AuthError::Expired);
        }
        Ok(Principal::VirtualKey {
            id: self.id,
            name: self.name.clone(),
            admin: self.admin,
        })
    }
}

/// Creates a key in the key file at `path` (creating the file if it is missing) and returns
/// the raw key, which is shown once and stored nowhere, with its record. The new id is one
/// more than the largest in the file (1 for the first key). The file is rewritten atomically
/// (a temporary file in the same directory, then a rename) with mode 0600.
///
/// # Errors
/// [`AuthError::Store`] when the file cannot be loaded ([`KeyStore::load`]; an invalid file
/// is never overwritten) or written, or the random source fails.
pub fn add_key(
    path: &Path,
    name: &str,
    admin: bool,
    expires_at: Option<u64>,
) -> Result<(String, KeyRecord), AuthError> {
    let store = KeyStore::load(path)?;
    let id = match store.records.iter().map(|record| record.id).max() {
        None => 1,
        Some(max) => max.checked_add(1).ok_or_else(|| {
            store_error(format_args!("{}: key ids are exhausted", path.display()))
        })?,
    };
    // A collision with an existing 190-bit key does not happen with a working random source;
    // checking is cheap, and the bound stops a broken source from looping forever.
    let mut fresh = None;
    for _ in 0..MAX_DRAWS {
        let key = generate_virtual_key()?;
        let hash = hash_key(&key);
        if !store.by_hash.contains_key(&hash) {
            fresh = Some((key, hash));
            break;
        }
    }
    let (key, hash) =
        fresh.ok_or_else(|| store_error("the random source keeps repeating existing keys"))?;
    let record = KeyRecord {
        id,
        name: name.to_owned(),
        hash,
        enabled: true,
        expires_at,
        admin,
    };
    let mut records = store.records;
    records.push(record.clone());
    let mut json = serde_json::to_vec_pretty(&KeyFile { keys: records })
        .map_err(|error| store_error(format_args!("{}: {error}", path.display())))?;
    json.push(b'\n');
    write_atomically(path, &json)
        .map_err(|error| store_error(format_args!("{}: cannot write: {error}", path.display())))?;
    Ok((key, record))
}

/// Replaces `path` with `bytes`: writes a 0600 temporary file next to it, syncs it, renames it
/// over `path`, then syncs the directory (best effort). The temporary file is removed on
/// failure.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|_| io::Error::other("the operating system's random source failed"))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        u64::from_le_bytes(nonce)
    ));
    let result = write_new(&temp, bytes).and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    // Makes the rename durable; a failure here leaves the new file in place, so it is ignored.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Creates `path` (which must not exist) readable and writable by its owner only, and fills it.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // The umask can only clear bits of the creation mode; this sets exactly 0600.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// The fields of Conduit's `VirtualKey` entity this server uses (System.Text.Json's default
/// PascalCase names; every other field is ignored).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConduitKey {
    id: i64,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    key_hash: Option<String>,
    is_enabled: bool,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
}

/// Parses the JSON `VirtualKey` entity Conduit caches in Redis under `vkey:<hash>` into a
/// record with that `hash` (normalised to lowercase).
///
/// `ExpiresAt` is ISO-8601 (`YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]`; without an offset it
/// is taken as UTC, as Conduit stores UTC). A fraction is dropped, so a key expires up to a
/// second early, never late; a time before 1970 is 0 (expired). The key is admin when
/// `Metadata` is a JSON object whose `isAdmin` is `true` or the string `"true"` (any case);
/// metadata that is not such an object just means "not admin". A missing `KeyName` is "".
///
/// # Errors
/// [`AuthError::Store`] when `hash` is not 64 hex digits, the JSON is not an object with
/// `Id` and `IsEnabled`, its `KeyHash` (if present) differs from `hash`, or `ExpiresAt` is not
/// a time in that format.
pub fn conduit_record(hash: &str, json: &str) -> Result<KeyRecord, AuthError> {
    if !is_hash(hash) {
        return Err(store_error("a vkey entry's hash is not 64 hex digits"));
    }
    let entity: ConduitKey = serde_json::from_str(json)
        .map_err(|error| store_error(format_args!("vkey entity: {error}")))?;
    if entity
        .key_hash
        .as_deref()
        .is_some_and(|own| !own.eq_ignore_ascii_case(hash))
    {
        return Err(store_error(format_args!(
            "vkey entity {}: KeyHash does not match its Redis key",
            entity.id
        )));
    }
    let expires_at = match entity.expires_at.as_deref() {
        None => None,
        Some(text) => Some(parse_utc(text).ok_or_else(|| {
            store_error(format_args!(
                "vkey entity {}: ExpiresAt {text:?} is not an ISO-8601 time",
                entity.id
            ))
        })?),
    };
    Ok(KeyRecord {
        id: entity.id,
        name: entity.key_name.unwrap_or_default(),
        hash: hash.to_ascii_lowercase(),
        enabled: entity.is_enabled,
        expires_at,
        admin: entity.metadata.as_deref().is_some_and(metadata_is_admin),
    })
}

/// Whether Conduit's `Metadata` JSON marks its key as admin (`"isAdmin"` stringifying to
/// `"true"`).
fn metadata_is_admin(metadata: &str) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(metadata) else {
        return false;
    };
    match map.get("isAdmin") {
        Some(serde_json::Value::Bool(flag)) => *flag,
        Some(serde_json::Value::String(text)) => text.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` to unix seconds (fraction dropped;
/// no offset means UTC; before 1970 clamps to 0). `None` when it is not that format or not a
/// real date and time.
fn parse_utc(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let (stamp, mut rest) = (bytes.get(..19)?, bytes.get(19..)?);
    if [stamp[4], stamp[7], stamp[10], stamp[13], stamp[16]] != *b"--T::" {
        return None;
    }
    let year = i64::from(number(&stamp[0..4])?);
    let month = number(&stamp[5..7])?;
    let day = number(&stamp[8..10])?;
    let hour = i64::from(number(&stamp[11..13])?);
    let minute = i64::from(number(&stamp[14..16])?);
    let second = i64::from(number(&stamp[17..19])?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = i64::from(number(&[*h1, *h2])?);
            let minutes = i64::from(number(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(u64::try_from(seconds).unwrap_or(0))
}

/// The value of a run of ASCII digits, or `None` if any byte is not a digit.
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * march_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Whether `text` is 64 hex digits (either case).
fn is_hash(text: &str) -> bool {
    text.len() == HASH_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn store_error(reason: impl Display) -> AuthError {
    AuthError::Store(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// A test directory under the system temp dir, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).unwrap();
            let path = std::env::temp_dir().join(format!(
                "ringhub-auth-{tag}-{}-{}",
                std::process::id(),
                u64::from_le_bytes(nonce)
            ));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(id: i64, key: &str) -> KeyRecord {
        KeyRecord {
            id,
            name: format!("key{id}"),
            hash: hash_key(key),
            enabled: true,
            expires_at: None,
            admin: false,
        }
    }

    fn key(fill: char) -> String {
        format!("condt_{}", fill.to_string().repeat(32))
    }

    #[test]
    fn hashes_are_sha256_lowercase_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash_key(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn only_condt_plus_32_alphanumerics_is_a_virtual_key() {
        assert!(is_virtual_key(&key('a')));
        assert!(is_virtual_key("condt_0123456789abcdefghijABCDEFGHIJzZ"));
        assert!(!is_virtual_key("condt_"));
        assert!(!is_virtual_key(&format!("{}a", key('a'))));
        assert!(!is_virtual_key(&key('a')[..37]));
        assert!(!is_virtual_key(&key('a').replace("condt_", "CONDT_")));
        assert!(!is_virtual_key(&key('a').replace("aaaa", "aa+a")));
        assert!(!is_virtual_key(&key('a').replace("aaaa", "aa_a")));
        assert!(!is_virtual_key(&format!("condt_{}", "é".repeat(16))));
    }

    #[test]
    fn generated_keys_are_valid_38_characters_and_unique() {
        let keys: std::collections::HashSet<String> =
            (0..200).map(|_| generate_virtual_key().unwrap()).collect();
        assert_eq!(keys.len(), 200);
        for key in &keys {
            assert_eq!(key.len(), 38);
            assert!(is_virtual_key(key), "{key}");
        }
    }

    #[test]
    fn an_admin_hash_authenticates_any_string_as_admin() {
        let store = KeyStore::empty();
        let admins = vec![hash_key("operator secret").to_ascii_uppercase()];
        assert_eq!(
            store.authenticate("operator secret", &admins, NOW),
            Ok(Principal::AdminKey)
        );
        assert_eq!(
            store.authenticate("operator secreT", &admins, NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn a_stored_enabled_key_is_its_virtual_key() {
        let mut admin = record(9, &key('b'));
        admin.admin = true;
        let store = KeyStore::from_records(vec![record(1, &key('a')), admin]);
        assert_eq!(
            store.authenticate(&key('a'), &[], NOW),
            Ok(Principal::VirtualKey {
                id: 1,
                name: "key1".into(),
                admin: false
            })
        );
        assert_eq!(
            store.authenticate(&key('b'), &[], NOW),
            Ok(Principal::VirtualKey {
                id: 9,
                name: "key9".into(),
                admin: true
            })
        );
    }

    #[test]
    fn unknown_malformed_and_empty_tokens_are_refused() {
        let store = KeyStore::from_records(vec![record(1, &key('a'))]);
        assert_eq!(
            store.authenticate(&key('c'), &[], NOW),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            store.authenticate("not-a-key", &[], NOW),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            store.authenticate("", &[hash_key("")], NOW),
            Err(AuthError::MissingToken)
        );
    }

    #[test]
    fn disabled_keys_are_refused() {
        let mut disabled = record(1, &key('a'));
        disabled.enabled = false;
        let store = KeyStore::from_records(vec![disabled]);
        assert_eq!(
            store.authenticate(&key('a'), &[], NOW),
            Err(AuthError::Disabled)
        );
    }

    #[test]
    fn a_key_expiring_now_is_expired_and_one_second_later_is_not() {
        let mut expiring = record(1, &key('a'));
        expiring.expires_at = Some(NOW);
        let store = KeyStore::from_records(vec![expiring]);
        assert_eq!(
            store.authenticate(&key('a'), &[], NOW),
            Err(AuthError::Expired)
        );
        assert!(store.authenticate(&key('a'), &[], NOW - 1).is_ok());
    }

    #[test]
    fn a_missing_key_file_is_an_empty_store() {
        let dir = TempDir::new("missing");
        let store = KeyStore::load(&dir.0.join("keys.json")).unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn invalid_key_files_are_store_errors() {
        let dir = TempDir::new("invalid");
        let path = dir.0.join("keys.json");
        let secret = key('s');
        let bad_hash =
            format!(r#"{{"keys":[{{"id":1,"name":"a","hash":"{secret}","enabled":true}}]}}"#);
        let a = hash_key("a");
        let cases = [
            "{not json".to_owned(),
            r#"{"keys":[{"id":1,"name":"a"}]}"#.to_owned(),
            format!(
                r#"{{"keys":[{{"id":1,"name":"a","hash":"{a}","enabled":true,"enabeld":1}}]}}"#
            ),
            format!(
                r#"{{"keys":[{{"id":1,"name":"a","hash":"{a}","enabled":true}},{{"id":1,"name":"b","hash":"{}","enabled":true}}]}}"#,
                hash_key("b")
            ),
            format!(
                r#"{{"keys":[{{"id":1,"name":"a","hash":"{a}","enabled":true}},{{"id":2,"name":"b","hash":"{}","enabled":true}}]}}"#,
                a.to_ascii_uppercase()
            ),
            bad_hash,
        ];
        for text in cases {
            fs::write(&path, &text).unwrap();
            let error = KeyStore::load(&path).unwrap_err();
            let AuthError::Store(reason) = &error else {
                panic!("{error:?} for {text}");
            };
            assert!(!reason.contains(&secret), "{reason}");
            assert_eq!(error.status(), 503);
        }
    }

    #[test]
    fn a_valid_key_file_loads_with_defaults_and_lowercased_hashes() {
        let dir = TempDir::new("valid");
        let path = dir.0.join("keys.json");
        let upper = hash_key(&key('a')).to_ascii_uppercase();
        fs::write(
            &path,
            format!(r#"{{"keys":[{{"id":3,"name":"dev","hash":"{upper}","enabled":true}}]}}"#),
        )
        .unwrap();
        let store = KeyStore::load(&path).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.records()[0].hash, hash_key(&key('a')));
        assert_eq!(store.records()[0].expires_at, None);
        assert!(!store.records()[0].admin);
        assert!(store.authenticate(&key('a'), &[], NOW).is_ok());
    }

    #[test]
    fn add_key_numbers_keys_and_writes_only_hashes_to_a_private_file() {
        let dir = TempDir::new("add");
        let path = dir.0.join("keys.json");
        let (first, first_record) = add_key(&path, "dev", false, None).unwrap();
        let (second, second_record) = add_key(&path, "ops", true, Some(NOW)).unwrap();
        assert_eq!((first_record.id, second_record.id), (1, 2));
        assert!(is_virtual_key(&first) && is_virtual_key(&second));
        assert_eq!(second_record.hash, hash_key(&second));

        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&first) && !text.contains(&second[6..]));
        assert!(text.contains(&first_record.hash) && text.contains(&second_record.hash));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");

        let store = KeyStore::load(&path).unwrap();
        assert_eq!(store.records(), &[first_record, second_record.clone()]);
        assert_eq!(
            store.authenticate(&second, &[], NOW - 1),
            Ok(Principal::VirtualKey {
                id: 2,
                name: "ops".into(),
                admin: true
            })
        );
    }

    #[test]
    fn add_key_continues_after_the_largest_id_and_never_overwrites_a_bad_file() {
        let dir = TempDir::new("addmax");
        let path = dir.0.join("keys.json");
        fs::write(
            &path,
            format!(
                r#"{{"keys":[{{"id":41,"name":"old","hash":"{}","enabled":false}}]}}"#,
                hash_key("x")
            ),
        )
        .unwrap();
        assert_eq!(add_key(&path, "new", false, None).unwrap().1.id, 42);

        fs::write(&path, "{broken").unwrap();
        assert!(matches!(
            add_key(&path, "new", false, None),
            Err(AuthError::Store(_))
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "{broken");
    }

    #[test]
    fn a_conduit_entity_without_expiry_or_metadata_is_a_plain_key() {
        let hash = hash_key(&key('a'));
        let json = r#"{"Id":7,"KeyName":"x","KeyHash":null,"IsEnabled":true,"ExpiresAt":null,
            "Metadata":null,"VirtualKeyGroupId":3,"AllowedModels":"gpt-4","RateLimitRpm":null}"#;
        assert_eq!(
            conduit_record(&hash.to_ascii_uppercase(), json),
            Ok(KeyRecord {
                id: 7,
                name: "x".into(),
                hash,
                enabled: true,
                expires_at: None,
                admin: false,
            })
        );
        let minimal = conduit_record(&hash_key("m"), r#"{"Id":1,"IsEnabled":false}"#).unwrap();
        assert_eq!((minimal.name.as_str(), minimal.enabled), ("", false));
    }

    #[test]
    fn conduit_expiry_times_parse_to_unix_seconds() {
        let hash = hash_key("k");
        let expiry = |at: &str| {
            let json = format!(r#"{{"Id":1,"KeyName":"k","IsEnabled":true,"ExpiresAt":"{at}"}}"#);
            conduit_record(&hash, &json).map(|record| record.expires_at)
        };
        // 2026-12-01T00:00:00Z is 1_796_083_200 (date -u -d 2026-12-01 +%s).
        for at in [
            "2026-12-01T00:00:00Z",
            "2026-12-01T00:00:00.9999999Z",
            "2026-12-01T00:00:00+00:00",
            "2026-12-01T00:00:00.123-00:00",
            "2026-12-01T00:00:00",
            "2026-12-01T02:30:00+02:30",
        ] {
            assert_eq!(expiry(at), Ok(Some(1_796_083_200)), "{at}");
        }
        assert_eq!(expiry("1970-01-01T00:00:00Z"), Ok(Some(0)));
        assert_eq!(expiry("1969-12-31T23:59:59Z"), Ok(Some(0)));
        assert_eq!(expiry("2024-02-29T12:00:00Z"), Ok(Some(1_709_208_000)));
        for bad in [
            "2026-12-01",
            "2026-12-01 00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:00:00.Z",
            "2026-12-01T00:00:00+0000",
            "2026-12-01T00:00:00UTC",
            "+026-12-01T00:00:00Z",
        ] {
            assert!(matches!(expiry(bad), Err(AuthError::Store(_))), "{bad}");
        }
    }

    #[test]
    fn conduit_metadata_marks_admins_when_is_admin_stringifies_to_true() {
        let hash = hash_key("k");
        let admin = |metadata: &str| {
            let json = serde_json::json!({"Id": 1, "KeyName": "k", "IsEnabled": true,
                "Metadata": metadata})
            .to_string();
            conduit_record(&hash, &json).unwrap().admin
        };
        assert!(admin(r#"{"isAdmin":true}"#));
        assert!(admin(r#"{"isAdmin":"true","team":"ops"}"#));
        assert!(admin(r#"{"isAdmin":"True"}"#));
        assert!(!admin(r#"{"isAdmin":false}"#));
        assert!(!admin(r#"{"isAdmin":1}"#));
        assert!(!admin(r#"{"IsAdmin":true}"#));
        assert!(!admin("not json"));
        assert!(!admin("[true]"));
    }

    #[test]
    fn conduit_entities_that_do_not_fit_are_store_errors() {
        let hash = hash_key("k");
        for json in [
            "{",
            r#"{"KeyName":"k","IsEnabled":true}"#,
            &format!(
                r#"{{"Id":1,"IsEnabled":true,"KeyHash":"{}"}}"#,
                hash_key("other")
            ),
        ] {
            assert!(
                matches!(conduit_record(&hash, json), Err(AuthError::Store(_))),
                "{json}"
            );
        }
        assert!(matches!(
            conduit_record("abc", r#"{"Id":1,"IsEnabled":true}"#),
            Err(AuthError::Store(_))
        ));
    }
}
