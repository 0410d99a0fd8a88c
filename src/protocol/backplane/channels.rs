//! Redis channel names of one hub, both ways: [`Channels`] builds them and
//! [`Channels::classify`] tells what an incoming one is for.
//!
//! A name is `{app prefix}{hub}:{kind}`, where the hub is its CLR full name (`typeof(THub)
//! .FullName`, e.g. `ConduitLLM.Http.Hubs.ImageGenerationHub`) and the app prefix is
//! StackExchange.Redis' `ChannelPrefix` (e.g. Conduit's `conduit_signalr:`), prepended with no
//! separator (`RedisChannels.cs`; `signalr-protocol.md` §7.1; `conduit-hubs.md` §2.3).
//!
//! StackExchange.Redis adds the app prefix when it publishes or subscribes and strips it from
//! incoming names, so .NET code never sees it, and the return channel a .NET server writes
//! *inside* a client-result invocation has none: see [`Channels::return_address`] and
//! [`Channels::resolve_return`].

/// The channel names of one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// The app prefix alone (empty when there is none).
    app_prefix: String,
    /// The app prefix followed by the hub name: every channel starts with it.
    base: String,
}

/// What an incoming channel name is for. Names are borrowed from the channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `:all`: invocations for every connection (Clients.All, AllExcept).
    All,
    /// `:group:{name}`: invocations for a group's members.
    Group(&'a str),
    /// `:connection:{id}`: invocations for one connection.
    Connection(&'a str),
    /// `:user:{id}`: invocations for every connection of a user.
    User(&'a str),
    /// `:ringhub:keystate`: ringhub's per-key state updates.
    KeyState,
    /// `:ringhub:stream`: ringhub's streamed-response chunks.
    Stream,
    /// `:internal:groups`: group add/remove commands for whichever server owns the connection.
    Groups,
    /// `:internal:ack:{server}`: acks of the group commands `server` sent.
    Ack(&'a str),
    /// `:internal:return:{server}`: client results for invocations `server` started.
    Return(&'a str),
    /// Another hub's channel, another application's, or not UTF-8.
    Unknown,
}

impl Channels {
    /// The channels of hub `hub` (its CLR full name), behind `app_prefix` if there is one.
    pub fn new(app_prefix: Option<&str>, hub: &str) -> Self {
        let app_prefix = app_prefix.unwrap_or_default().to_owned();
        let base = format!("{app_prefix}{hub}");
        Self { app_prefix, base }
    }

    fn named(&self, kind: &str, name: &str) -> String {
        let mut channel = String::with_capacity(self.base.len() + kind.len() + name.len());
        channel.push_str(&self.base);
        channel.push_str(kind);
        channel.push_str(name);
        channel
    }

    /// `{base}:all`.
    pub fn all(&self) -> String {
        self.named(":all", "")
    }

    /// `{base}:group:{group}` (case-sensitive, as Redis is).
    pub fn group(&self, group: &str) -> String {
        self.named(":group:", group)
    }

    /// `{base}:connection:{connection_id}` (the connection id, not the token).
    pub fn connection(&self, connection_id: &str) -> String {
        self.named(":connection:", connection_id)
    }

    /// `{base}:user:{user_id}`.
    pub fn user(&self, user_id: &str) -> String {
        self.named(":user:", user_id)
    }

    /// `{base}:internal:groups`.
    pub fn groups(&self) -> String {
        self.named(":internal:groups", "")
    }

    /// `{base}:ringhub:stream`: ringhub's streamed-response chunks (not an ASP.NET channel).
    pub fn stream(&self) -> String {
        self.named(":ringhub:stream", "")
    }

    /// `{base}:ringhub:keystate`: ringhub's per-key state updates (not an ASP.NET channel).
    pub fn key_state(&self) -> String {
        self.named(":ringhub:keystate", "")
    }

    /// `{base}:internal:ack:{server}`.
    pub fn ack(&self, server: &str) -> String {
        self.named(":internal:ack:", server)
    }

    /// `{base}:internal:return:{server}`: the channel to subscribe to for client results.
    pub fn return_results(&self, server: &str) -> String {
        self.named(":internal:return:", server)
    }

    /// What goes in the `ReturnChannel` field of a client-result invocation this server
    /// publishes: the return channel without the app prefix, as a .NET server writes it.
    pub fn return_address(&self, server: &str) -> String {
        let hub = self
            .base
            .strip_prefix(self.app_prefix.as_str())
            .unwrap_or(&self.base);
        format!("{hub}:internal:return:{server}")
    }

    /// The channel to publish a client result on, from the `ReturnChannel` field of the
    /// invocation that asked for it: the app prefix followed by the address.
    pub fn resolve_return(&self, return_address: &str) -> String {
        format!("{}{return_address}", self.app_prefix)
    }

    /// What the channel name `channel` (as Redis delivered it, app prefix included) is for.
    pub fn classify<'a>(&self, channel: &'a [u8]) -> Channel<'a> {
        let Some(rest) = channel.strip_prefix(self.base.as_bytes()) else {
            return Channel::Unknown;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return Channel::Unknown;
        };
        let named = |kind: &str| rest.strip_prefix(kind);
        if let Some(group) = named(":group:") {
            Channel::Group(group)
        } else if let Some(connection_id) = named(":connection:") {
            Channel::Connection(connection_id)
        } else if let Some(user_id) = named(":user:") {
            Channel::User(user_id)
        } else if let Some(server) = named(":internal:ack:") {
            Channel::Ack(server)
        } else if let Some(server) = named(":internal:return:") {
            Channel::Return(server)
        } else {
            match rest {
                ":all" => Channel::All,
                ":internal:groups" => Channel::Groups,
                ":ringhub:keystate" => Channel::KeyState,
                ":ringhub:stream" => Channel::Stream,
                _ => Channel::Unknown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = "ConduitLLM.Http.Hubs.ImageGenerationHub";

    #[test]
    fn conduit_channels_are_the_app_prefix_then_the_hub_clr_name_then_the_kind() {
        let channels = Channels::new(Some("conduit_signalr:"), HUB);
        let base = "conduit_signalr:ConduitLLM.Http.Hubs.ImageGenerationHub";
        assert_eq!(channels.all(), format!("{base}:all"));
        assert_eq!(
            channels.group("image-task_0123"),
            format!("{base}:group:image-task_0123")
        );
        assert_eq!(channels.connection("c1"), format!("{base}:connection:c1"));
        assert_eq!(channels.user("u1"), format!("{base}:user:u1"));
        assert_eq!(channels.groups(), format!("{base}:internal:groups"));
        assert_eq!(
            channels.ack("web1_ab"),
            format!("{base}:internal:ack:web1_ab")
        );
        assert_eq!(
            channels.return_results("web1_ab"),
            format!("{base}:internal:return:web1_ab")
        );
    }

    #[test]
    fn without_an_app_prefix_channels_start_with_the_hub_name() {
        let channels = Channels::new(None, "MyApp.Hubs.ChatHub");
        assert_eq!(channels.all(), "MyApp.Hubs.ChatHub:all");
        assert_eq!(channels, Channels::new(Some(""), "MyApp.Hubs.ChatHub"));
    }

    #[test]
    fn the_return_address_in_a_payload_leaves_out_the_app_prefix_and_resolving_adds_it_back() {
        let channels = Channels::new(Some("conduit_signalr:"), HUB);
        let address = channels.return_address("web1_ab");
        assert_eq!(address, format!("{HUB}:internal:return:web1_ab"));
        assert_eq!(
            channels.resolve_return(&address),
            channels.return_results("web1_ab")
        );
    }

    #[test]
    fn every_channel_built_classifies_back_to_its_kind_and_name() {
        let channels = Channels::new(Some("conduit_signalr:"), HUB);
        let cases = [
            (channels.all(), Channel::All),
            (
                channels.group("g:with:colons"),
                Channel::Group("g:with:colons"),
            ),
            (channels.group(""), Channel::Group("")),
            (channels.connection("abc"), Channel::Connection("abc")),
            (
                channels.user("bob@example.com"),
                Channel::User("bob@example.com"),
            ),
            (channels.groups(), Channel::Groups),
            (channels.ack("s1"), Channel::Ack("s1")),
            (channels.return_results("s2"), Channel::Return("s2")),
        ];
        for (name, expected) in cases {
            assert_eq!(channels.classify(name.as_bytes()), expected, "{name}");
        }
    }

    #[test]
    fn foreign_or_malformed_channel_names_classify_as_unknown() {
        let channels = Channels::new(Some("conduit_signalr:"), HUB);
        let other_hub = Channels::new(Some("conduit_signalr:"), "ConduitLLM.Http.Hubs.TaskHub");
        let other_app = Channels::new(Some("conduit_admin_signalr:"), HUB);
        let longer_hub = Channels::new(Some("conduit_signalr:"), &format!("{HUB}2"));
        let unprefixed = Channels::new(None, HUB);
        for name in [
            other_hub.all(),
            other_app.all(),
            longer_hub.all(),
            unprefixed.all(),
            format!("conduit_signalr:{HUB}"),
            format!("conduit_signalr:{HUB}:"),
            format!("conduit_signalr:{HUB}:all:more"),
            format!("conduit_signalr:{HUB}:internal:groupsx"),
            format!("conduit_signalr:{HUB}:internal:other"),
            format!("conduit_signalr:{HUB}:groups:x"),
        ] {
            assert_eq!(
                channels.classify(name.as_bytes()),
                Channel::Unknown,
                "{name}"
            );
        }
        let mut not_utf8 = channels.group("").into_bytes();
        not_utf8.push(0xff);
        assert_eq!(channels.classify(&not_utf8), Channel::Unknown);
        assert_eq!(channels.classify(b""), Channel::Unknown);
    }
}
