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

/// The services as an aligned table (names left-aligned, numbers right-aligned), then the
/// interface of each service that described one (`#[courier::service]` servers do), or
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
                s.stats.pid.to_string(),
                s.stats.clients.to_string(),
                s.stats.queued.to_string(),
                s.stats.in_service.to_string(),
                s.stats.lends.to_string(),
                s.stats.served.to_string(),
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
    let described: Vec<_> = services
        .iter()
        .filter_map(|s| Some((&s.name, s.interface.as_ref()?)))
        .collect();
    if !described.is_empty() {
        out.push('\n');
        for (name, interface) in described {
            // Another process wrote the description: no control characters reach the terminal.
            let clean: String = interface
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            out.push_str(&format!("{name}: {clean}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, pid: u32, served: u64) -> shm::ServiceInfo {
        shm::ServiceInfo {
            name: name.to_string(),
            stats: shm::ServerStats {
                pid,
                clients: 2,
                queued: 0,
                in_service: 1,
                lends: 0,
                served,
            },
            interface: None,
        }
    }

    #[test]
    fn interfaces_follow_the_table_without_control_characters() {
        let mut described = info("kv", 9, 1);
        described.interface = Some("Kv (interface 0x1): get (call),\x1b[2J put (send)".into());
        let out = table(&[info("plain", 8, 0), described]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert_eq!(lines[3], "");
        assert_eq!(
            lines[4],
            "kv: Kv (interface 0x1): get (call), [2J put (send)"
        );
    }

    #[test]
    fn empty_table() {
        assert_eq!(table(&[]), "no live services\n");
    }

    #[test]
    fn columns_line_up() {
        let out = table(&[info("a", 7, 123_456), info("a-much-longer-name", 1234, 5)]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME "), "{out}");
        // Names left-aligned; the PID column ends at the same place on every line.
        let pid_end = lines[0].find("PID").unwrap() + 3;
        assert_eq!(
            &lines[1][..pid_end],
            format!("a{}7", " ".repeat(pid_end - 2))
        );
        assert!(lines[2][..pid_end].starts_with("a-much-longer-name"));
        assert!(lines[2][..pid_end].ends_with(" 1234"), "{out}");
        assert!(lines[2].ends_with("      5"), "{out}");
    }
}
