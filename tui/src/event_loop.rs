//! The loop: readings from a source, keys from the terminal, a frame after each.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures::StreamExt;

use crate::app::{App, Key};
use crate::Snapshot;

/// Where readings come from. `Ok(None)`: the source has finished (a run ended).
pub trait Source: Send {
    fn fetch(&mut self) -> impl std::future::Future<Output = Result<Option<Snapshot>, String>> + Send;
}

/// A running engine's `/stats`: the same figures as `/metrics`, typed.
pub struct EngineSource {
    client: reqwest::Client,
    url: String,
}

impl EngineSource {
    pub fn new(engine: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client"),
            url: format!("{}/stats", engine.trim_end_matches('/')),
        }
    }
}

impl Source for EngineSource {
    async fn fetch(&mut self) -> Result<Option<Snapshot>, String> {
        let response = self.client.get(&self.url).send().await.map_err(|e| short_error(&e))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let snapshot = response
            .json()
            .await
            .map_err(|e| format!("not a Courier /stats reading: {e}"))?;
        Ok(Some(snapshot))
    }
}

/// Readings published by a process that samples the pipeline itself (loadtest).
pub struct WatchSource(pub tokio::sync::watch::Receiver<Snapshot>);

impl Source for WatchSource {
    /// Waits for a reading newer than the last (a repeat would read as a zero rate).
    async fn fetch(&mut self) -> Result<Option<Snapshot>, String> {
        match tokio::time::timeout(Duration::from_secs(5), self.0.changed()).await {
            Ok(Ok(())) => Ok(Some(self.0.borrow_and_update().clone())),
            Ok(Err(_)) => Ok(None),
            Err(_) => Err("no new reading for 5 s".into()),
        }
    }
}

fn short_error(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connection refused".into()
    } else if error.is_timeout() {
        "timed out".into()
    } else {
        error.to_string()
    }
}

fn key_of(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Char('q'),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Esc => Key::Esc,
        _ => return None,
    })
}

/// The next key the view understands, from crossterm's async event stream;
/// `None` once the terminal's input has ended.
async fn next_key(events: &mut EventStream) -> Option<Key> {
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                if let Some(k) = key_of(key.code, key.modifiers) {
                    return Some(k);
                }
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Runs the view until `q` (or, without a terminal, until Ctrl-C).
pub async fn run(mut source: impl Source, target: String, refresh: Duration) -> anyhow::Result<()> {
    let mut app = App::new(target);
    let started = Instant::now();
    if !std::io::stdout().is_terminal() {
        // No TUI without a terminal: one plain line per reading.
        loop {
            match source.fetch().await {
                Ok(Some(snapshot)) => app.on_snapshot(started.elapsed().as_secs_f64(), snapshot),
                Ok(None) => return Ok(()),
                Err(error) => app.on_error(error),
            }
            println!("[{:>7.1}s] {}", started.elapsed().as_secs_f64(), app.plain_line());
            tokio::select! {
                _ = tokio::time::sleep(app.next_poll_in(refresh)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    // ratatui::init installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::init();
    let mut events = EventStream::new();
    let mut next_poll = tokio::time::Instant::now();
    let result = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_poll) => {
                match source.fetch().await {
                    Ok(Some(snapshot)) => app.on_snapshot(started.elapsed().as_secs_f64(), snapshot),
                    Ok(None) => app.quit = true,
                    Err(error) => app.on_error(error),
                }
                next_poll = tokio::time::Instant::now() + app.next_poll_in(refresh);
            }
            Some(key) = next_key(&mut events) => app.on_key(key),
        }
        if app.quit {
            break Ok(());
        }
        if let Err(error) = terminal.draw(|frame| crate::ui::draw(frame, &app)) {
            break Err(error.into());
        }
    };
    ratatui::restore();
    result
}
