//! `courier ls`: the live courier::shm services of this user, as a table.

use crate::rpc as shm;

/// Prints the table; false if the services could not be listed.
pub(crate) fn run() -> bool {
    match shm::services() {
        Ok(services) => {
            print!("{}", table(&services));
            true
        }
        Err(e) => {
            eprintln!("courier ls: {e}");
            false
        }
    }
}

/// The services as an aligned table (names left-aligned, numbers right-aligned), or
/// `no live services`.
fn table(services: &[shm::ServiceInfo]) -> String {
    if services.is_empty() {
        return "no live services\n".to_string();
    }
    const HEADERS: [&str; 7] = [
        "NAME",
        "PID",
        "CLIENTS",
        "QUEUED",
        "IN SERVICE",
        "LENDS",
        "SERVED",
    ];
    let rows: Vec<[String; 7]> = services
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.pid.to_string(),
                s.clients.to_string(),
                s.queued.to_string(),
                s.in_service.to_string(),
                s.lends.to_string(),
                s.served.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("  {cell:>w$}"));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(HEADERS);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}
