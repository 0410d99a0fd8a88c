//! The Redis key store (`auth.store = "redis"`) against a real `redis-server`: Conduit's
//! `vkey:<hash>` entries admit and refuse keys, `vkey_invalidated` and
//! `vkey_batch_invalidated` cut keys off within the cache TTL, Redis outages answer 503 and
//! heal, and a killed subscriber comes back. Then the Redis client itself: pipelining,
//! binary pub/sub, failing fast while Redis is down.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringhub::auth::{generate_virtual_key, hash_key};
use ringhub::config::{DriverKind, HubAuth, HubConfig, KeyStoreKind};
use ringhub::redis::{
    ClientOptions, CommandConnection, LinkState, RedisError, RedisUrl, Subscriber, SubscriberEvent,
    Value,
};
use support::redis::RedisServer;
use support::*;

const ADMIN_KEY: &str = "an-admin-key-for-tests-only";

/// The Conduit entity for a key, as Conduit caches it.
fn entity(id: i64, hash: &str, enabled: bool, expires_at: Option<&str>) -> String {
    serde_json::json!({
        "Id": id,
        "KeyName": "tester",
        "KeyHash": hash,
        "IsEnabled": enabled,
        "ExpiresAt": expires_at,
        "Metadata": null,
        "VirtualKeyGroupId": 1,
    })
    .to_string()
}

/// A new key and its hash.
fn new_key() -> (String, String) {
    let key = generate_virtual_key().unwrap();
    let hash = hash_key(&key);
    (key, hash)
}

fn server(driver: DriverKind, url: &str) -> TestServer {
    let url = url.to_owned();
    TestServer::start(driver, move |c| {
        c.auth.store = KeyStoreKind::Redis;
        c.auth.redis_url = url;
        c.auth.cache_ttl = Duration::from_secs(60);
        c.auth.admin_key_hashes = vec![hash_key(ADMIN_KEY)];
        c.hubs.push(HubConfig {
            name: "secure".into(),
            path: "/hubs/secure".into(),
            auth: HubAuth::VirtualKey,
            max_message_size: None,
            methods: vec![("Echo".into(), "echo".into())],
            protocols: vec!["json".into()],
            join_on_connect: Vec::new(),
            redis_name: None,
            events_url: None,
        });
    })
}

fn negotiate(addr: SocketAddr, key: &str) -> HttpResponse {
    http(
        addr,
        format!(
            "POST /hubs/secure/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
}

fn status(addr: SocketAddr, key: &str) -> u16 {
    negotiate(addr, key).status
}

/// Waits until the server answers `key` from its cache: Redis is made to say "disabled" while
/// the server still admits the key. Retries while the subscriber is not up yet (nothing is
/// cached then, and the invalidation that starts each attempt is not heard). Leaves Redis
/// saying "disabled".
fn cache_enabled_key(addr: SocketAddr, redis: &RedisServer, key: &str, hash: &str) {
    let vkey = format!("vkey:{hash}");
    assert!(
        eventually(Duration::from_secs(5), || {
            // Clears what an attempt before the subscriber was up may have left cached.
            redis.publish("vkey_invalidated", hash);
            redis.set(&vkey, &entity(7, hash, true, None));
            if status(addr, key) != 200 {
                return false;
            }
            redis.set(&vkey, &entity(7, hash, false, None));
            status(addr, key) == 200
        }),
        "the key was never served from the cache"
    );
}

on_both_drivers! {
    fn a_virtual_key_stored_in_redis_negotiates_and_an_unknown_key_gets_401(driver) {
        let redis = RedisServer::start();
        let (key, hash) = new_key();
        redis.set(&format!("vkey:{hash}"), &entity(7, &hash, true, None));
        let server = server(driver, &redis.url());
        let response = negotiate(server.addr, &key);
        assert_eq!(response.status, 200, "{}", response.body_str());
        assert!(response.body_str().contains("connectionToken"));

        let (unknown, _) = new_key();
        let refused = negotiate(server.addr, &unknown);
        assert_eq!(refused.status, 401);
        assert_eq!(refused.body_str(), "{\"error\":\"the API key is not valid\"}");
        assert_eq!(status(server.addr, "not-a-virtual-key"), 401);
    }

    fn disabled_and_expired_keys_in_redis_get_401(driver) {
        let redis = RedisServer::start();
        let (disabled, disabled_hash) = new_key();
        let (expired, expired_hash) = new_key();
        let (later, later_hash) = new_key();
        redis.set(&format!("vkey:{disabled_hash}"), &entity(1, &disabled_hash, false, None));
        redis.set(
            &format!("vkey:{expired_hash}"),
            &entity(2, &expired_hash, true, Some("2020-01-01T00:00:00Z")),
        );
        redis.set(
            &format!("vkey:{later_hash}"),
            &entity(3, &later_hash, true, Some("2999-01-01T00:00:00Z")),
        );
        let server = server(driver, &redis.url());
        let response = negotiate(server.addr, &disabled);
        assert_eq!((response.status, response.body_str()), (401, "{\"error\":\"the API key is disabled\"}"));
        let response = negotiate(server.addr, &expired);
        assert_eq!((response.status, response.body_str()), (401, "{\"error\":\"the API key has expired\"}"));
        assert_eq!(status(server.addr, &later), 200);
    }

    fn publishing_the_hash_on_vkey_invalidated_cuts_a_disabled_key_off_at_once(driver) {
        let redis = RedisServer::start();
        let (key, hash) = new_key();
        let server = server(driver, &redis.url());
        // Disabled in Redis, still admitted from the 60 s cache...
        cache_enabled_key(server.addr, &redis, &key, &hash);
        // ...until Conduit announces the change.
        let started = Instant::now();
        assert_eq!(redis.publish("vkey_invalidated", &hash), 1);
        assert!(eventually(Duration::from_secs(2), || status(server.addr, &key) == 401));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    fn a_batch_invalidation_evicts_every_key_it_names(driver) {
        let redis = RedisServer::start();
        let (first, first_hash) = new_key();
        let (second, second_hash) = new_key();
        let server = server(driver, &redis.url());
        cache_enabled_key(server.addr, &redis, &first, &first_hash);
        cache_enabled_key(server.addr, &redis, &second, &second_hash);
        let batch = serde_json::json!({
            "KeyHashes": [first_hash, second_hash],
            "Timestamp": "2026-01-01T00:00:00Z",
        });
        assert_eq!(redis.publish("vkey_batch_invalidated", &batch.to_string()), 1);
        assert!(eventually(Duration::from_secs(2), || {
            status(server.addr, &first) == 401 && status(server.addr, &second) == 401
        }));
    }

    fn an_unknown_key_is_remembered_briefly_until_an_invalidation_names_it(driver) {
        let redis = RedisServer::start();
        let (key, hash) = new_key();
        let server = server(driver, &redis.url());
        // The refusal is cached once the subscriber is up: then adding the key to Redis is
        // not seen at once.
        assert!(eventually(Duration::from_secs(5), || {
            redis.publish("vkey_invalidated", &hash);
            redis.command(&["DEL", &format!("vkey:{hash}")]);
            if status(server.addr, &key) != 401 {
                return false;
            }
            redis.set(&format!("vkey:{hash}"), &entity(7, &hash, true, None));
            status(server.addr, &key) == 401
        }));
        assert_eq!(redis.publish("vkey_invalidated", &hash), 1);
        assert!(eventually(Duration::from_secs(2), || status(server.addr, &key) == 200));
    }

    fn the_server_answers_503_while_redis_is_down_and_recovers_when_it_returns(driver) {
        let mut redis = RedisServer::start();
        let (key, hash) = new_key();
        redis.set(&format!("vkey:{hash}"), &entity(7, &hash, true, None));
        let server = server(driver, &redis.url());
        assert_eq!(status(server.addr, &key), 200);

        redis.stop();
        let mut down = None;
        assert!(eventually(Duration::from_secs(3), || {
            let response = negotiate(server.addr, &key);
            let is_down = response.status == 503;
            down = Some(response);
            is_down
        }), "last answer: {down:?}");
        let down = down.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&down.body).unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("Redis"), "{error}");
        assert!(!error.contains(&key) && !error.contains(&key[6..]), "{error}");
        // Admin keys never needed Redis.
        assert_eq!(status(server.addr, ADMIN_KEY), 200);

        redis.restart();
        redis.set(&format!("vkey:{hash}"), &entity(7, &hash, true, None));
        assert!(eventually(Duration::from_secs(8), || status(server.addr, &key) == 200));
    }

    fn a_killed_subscriber_is_reestablished_and_invalidations_work_again(driver) {
        let redis = RedisServer::start();
        let (key, hash) = new_key();
        let server = server(driver, &redis.url());
        cache_enabled_key(server.addr, &redis, &key, &hash);
        let before = redis.pubsub_client_ids();
        assert_eq!(before.len(), 1, "one subscriber per shard");

        assert!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).int() >= 1);
        assert!(
            eventually(Duration::from_secs(5), || {
                let now = redis.pubsub_client_ids();
                now.len() == 1 && now != before
            }),
            "the subscriber did not come back"
        );
        // The reconnect flushed the cache; cache the key again, then invalidate it.
        cache_enabled_key(server.addr, &redis, &key, &hash);
        assert_eq!(redis.publish("vkey_invalidated", &hash), 1);
        assert!(eventually(Duration::from_secs(2), || status(server.addr, &key) == 401));
    }

    fn the_password_and_database_in_the_url_are_used(driver) {
        let redis = RedisServer::start_with_password(Some("s3cret-pass"));
        let (key, hash) = new_key();
        redis.command_in(3, &["SET", &format!("vkey:{hash}"), &entity(7, &hash, true, None)]);
        let right = server(driver, &format!("{}/3", redis.url()));
        assert_eq!(status(right.addr, &key), 200);
        drop(right);

        let wrong = format!("redis://:wrong-pass@127.0.0.1:{}/3", redis.port);
        let wrong = server(driver, &wrong);
        let refused = negotiate(wrong.addr, &key);
        assert_eq!(refused.status, 503);
        assert!(!refused.body_str().contains("wrong-pass"), "{}", refused.body_str());
    }

    fn the_client_pipelines_commands_and_matches_every_reply_to_its_caller(driver) {
        let redis = RedisServer::start();
        let url = RedisUrl::parse(&redis.url()).unwrap();
        block_on(driver, async move {
            let client = CommandConnection::open(url, ClientOptions::default());
            let payload: &[u8] = b"\0\r\n\xffbinary";
            let sets: Vec<_> = (0..500)
                .map(|i| client.send(&[b"SET", format!("k{i}").as_bytes(), &[payload, format!("{i}").as_bytes()].concat()]))
                .collect();
            let gets: Vec<_> = (0..500)
                .map(|i| client.send(&[b"GET", format!("k{i}").as_bytes()]))
                .collect();
            for set in sets {
                assert_eq!(set.await.unwrap(), Value::Status(Bytes::from_static(b"OK")));
            }
            for (i, get) in gets.into_iter().enumerate() {
                let expected = [payload, format!("{i}").as_bytes()].concat();
                assert_eq!(get.await.unwrap(), Value::Data(Bytes::from(expected)));
            }
            assert!(matches!(client.command(&[b"NOSUCHCOMMAND"]).await, Err(RedisError::Server(_))));
            assert_eq!(client.get(b"missing").await.unwrap(), None);
            assert_eq!(client.state(), LinkState::Up);
        });
    }

    fn detached_publishes_are_pipelined_in_order_and_none_is_lost(driver) {
        let redis = RedisServer::start();
        let url = RedisUrl::parse(&redis.url()).unwrap();
        block_on(driver, async move {
            let events = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = std::rc::Rc::clone(&events);
            let subscriber = Subscriber::open(
                url.clone(),
                ClientOptions::default(),
                [Bytes::from_static(b"ordered")],
                move |event| {
                    if let SubscriberEvent::Message { payload, .. } = event {
                        sink.borrow_mut().push(payload);
                    }
                },
            );
            let publisher = CommandConnection::open(url, ClientOptions::default());
            wait_for(|| subscriber.is_up() && publisher.is_up()).await;
            let before = redis.command(&["INFO", "commandstats"]).text();
            // 5,000 binary 1 KiB payloads queued without awaiting anything: they go out in
            // a few pipelined writes, and nobody waits for the replies.
            let payload = |i: usize| [format!("{i:05}").as_bytes(), &[0xff; 1019][..]].concat();
            for i in 0..5_000 {
                publisher.send_detached(&[b"PUBLISH", b"ordered", &payload(i)]).unwrap();
            }
            assert!(publisher.in_flight() > 0);
            publisher.drained().await;
            assert_eq!(publisher.in_flight(), 0, "every reply was read");
            wait_for(|| events.borrow().len() >= 5_000).await;
            {
                let received = events.borrow();
                assert_eq!(received.len(), 5_000);
                for (i, got) in received.iter().enumerate() {
                    assert_eq!(&got[..], &payload(i)[..], "message {i} in order and intact");
                }
            }
            let calls = |info: &str| -> u64 {
                info.lines()
                    .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
                    .and_then(|rest| rest.split(',').next()?.parse().ok())
                    .unwrap_or(0)
            };
            let after = redis.command(&["INFO", "commandstats"]).text();
            assert_eq!(calls(&after) - calls(&before), 5_000, "one PUBLISH per message");
            // The connection still answers awaited commands after the detached ones.
            assert_eq!(publisher.publish(b"ordered", b"last").await.unwrap(), 1);
        });
    }

    fn a_subscriber_gives_up_a_link_that_went_silent_and_comes_back(driver) {
        let redis = RedisServer::start();
        let url = RedisUrl::parse(&redis.url()).unwrap();
        let options = ClientOptions {
            keepalive: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        block_on(driver, async move {
            let events = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = std::rc::Rc::clone(&events);
            let subscriber = Subscriber::open(url, options, [Bytes::from_static(b"a")], move |event| {
                sink.borrow_mut().push(event)
            });
            wait_for(|| subscriber.is_up()).await;
            // Frozen: the socket stays open and nothing answers, not even the keepalive PINGs.
            redis.pause();
            wait_for(|| events.borrow().contains(&SubscriberEvent::Down)).await;
            assert!(!subscriber.is_up());
            redis.resume();
            wait_for(|| subscriber.ups() >= 2).await;
            assert!(subscriber.is_up());
        });
    }

    fn the_subscriber_delivers_binary_messages_and_follows_runtime_changes(driver) {
        let redis = RedisServer::start();
        let url = RedisUrl::parse(&redis.url()).unwrap();
        block_on(driver, async move {
            let events = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = std::rc::Rc::clone(&events);
            let subscriber = Subscriber::open(
                url.clone(),
                ClientOptions::default(),
                [Bytes::from_static(b"a")],
                move |event| sink.borrow_mut().push(event),
            );
            let publisher = CommandConnection::open(url, ClientOptions::default());
            wait_for(|| subscriber.is_up()).await;
            assert_eq!(subscriber.ups(), 1);
            subscriber.subscribe(&[Bytes::from_static(b"b")]);
            // Wait until Redis counts the new subscription, then publish on both.
            wait_for_async(|| async {
                publisher.command(&[b"PUBSUB", b"NUMSUB", b"b"]).await.unwrap()
                    == Value::Array(vec![Value::Data(Bytes::from_static(b"b")), Value::Int(1)])
            }).await;
            assert_eq!(publisher.publish(b"a", b"\0one\xff").await.unwrap(), 1);
            assert_eq!(publisher.publish(b"b", b"two").await.unwrap(), 1);
            subscriber.unsubscribe(&[Bytes::from_static(b"a")]);
            wait_for_async(|| async { publisher.publish(b"a", b"gone").await.unwrap() == 0 }).await;
            assert_eq!(publisher.publish(b"b", b"three").await.unwrap(), 1);
            wait_for(|| events.borrow().len() >= 4).await;
            let message = |channel: &'static [u8], payload: &'static [u8]| SubscriberEvent::Message {
                channel: Bytes::from_static(channel),
                payload: Bytes::from_static(payload),
            };
            assert_eq!(
                *events.borrow(),
                [
                    SubscriberEvent::Up,
                    message(b"a", b"\0one\xff"),
                    message(b"b", b"two"),
                    message(b"b", b"three"),
                ]
            );
        });
    }

    fn a_command_without_an_answer_times_out_and_the_link_is_replaced(driver) {
        let redis = RedisServer::start();
        let url = RedisUrl::parse(&redis.url()).unwrap();
        let options = ClientOptions {
            command_timeout: Duration::from_millis(200),
            ..ClientOptions::default()
        };
        block_on(driver, async {
            let connection = CommandConnection::open(url, options);
            assert!(connection.command(&[b"PING"]).await.is_ok());
            // Redis holds every client's commands for 600 ms.
            redis.command(&["CLIENT", "PAUSE", "600"]);
            let started = Instant::now();
            assert_eq!(
                connection.command(&[b"PING"]).await,
                Err(RedisError::Timeout(Duration::from_millis(200)))
            );
            assert!(started.elapsed() < Duration::from_millis(500));
            wait_for_async(|| async { connection.command(&[b"PING"]).await.is_ok() }).await;
        });
    }

    fn commands_fail_fast_while_redis_is_down_and_work_again_after_it_returns(driver) {
        let mut redis = RedisServer::start();
        let url = RedisUrl::parse(&redis.url()).unwrap();
        let options = ClientOptions {
            backoff_max: Duration::from_millis(400),
            ..ClientOptions::default()
        };
        block_on(driver, async {
            let connection = CommandConnection::open(url, options);
            assert_eq!(connection.command(&[b"PING"]).await.unwrap(), Value::Status(Bytes::from_static(b"PONG")));
            redis.stop();
            wait_for(|| connection.state() == LinkState::Down).await;
            let started = Instant::now();
            // Down, or (if this lands on a reconnect attempt) that attempt's refusal.
            assert!(connection.command(&[b"PING"]).await.is_err());
            assert!(started.elapsed() < Duration::from_millis(200), "failed fast");
            redis.restart();
            wait_for_async(|| async { connection.command(&[b"PING"]).await.is_ok() }).await;
        });
    }
}

/// Runs `future` on a fresh single-threaded monoio runtime of `driver`'s kind.
fn block_on<F: Future>(driver: DriverKind, future: F) -> F::Output {
    match driver {
        DriverKind::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(future),
        _ => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(future),
    }
}

/// Polls `condition` on the runtime (yielding to its tasks) for up to 5 s.
async fn wait_for(mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting"
        );
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_for`] with an async condition.
async fn wait_for_async<F: Future<Output = bool>>(mut condition: impl FnMut() -> F) {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting"
        );
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}
