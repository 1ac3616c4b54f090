//! A tiny ML-100K reader for the genre test (RecBole atomic files), kept here so the crate
//! needs no data-layer dependency: behaviour = a user's latest titles, rationale = a sentence
//! about the genre that dominates those titles.

use std::collections::HashMap;
use std::path::Path;

use pulserec_thoughtspace::TrainingPair;

fn rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// One pair per user, users in id order.
pub fn genre_pairs(dir: &Path, titles_per_user: usize) -> Vec<TrainingPair> {
    let items: HashMap<String, (String, Vec<String>)> = rows(&dir.join("ml-100k.item"))
        .into_iter()
        .map(|r| {
            let genres = r[3].split(' ').map(str::to_string).collect();
            (r[0].clone(), (r[1].clone(), genres))
        })
        .collect();
    let mut by_user: HashMap<u32, Vec<(u64, u32, String)>> = HashMap::new();
    for r in rows(&dir.join("ml-100k.inter")) {
        let ts = r[3].parse::<f64>().unwrap() as u64;
        by_user.entry(r[0].parse().unwrap()).or_default().push((
            ts,
            r[1].parse().unwrap(),
            r[1].clone(),
        ));
    }
    let mut users: Vec<u32> = by_user.keys().copied().collect();
    users.sort_unstable();
    users
        .into_iter()
        .map(|u| {
            let mut seq = by_user.remove(&u).unwrap();
            seq.sort(); // by timestamp, then item id: a stable tie-break
            let recent = &seq[seq.len().saturating_sub(titles_per_user)..];
            let mut counts: HashMap<&str, usize> = HashMap::new();
            let mut titles = Vec::new();
            for (_, _, id) in recent {
                let (title, genres) = &items[id];
                titles.push(title.clone());
                for g in genres {
                    *counts.entry(g.as_str()).or_default() += 1;
                }
            }
            let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            TrainingPair {
                user: u.to_string(),
                behaviour: format!("History: {}", titles.join("; ")),
                rationale: format!("This viewer is drawn to {} films.", ranked[0].0),
            }
        })
        .collect()
}
