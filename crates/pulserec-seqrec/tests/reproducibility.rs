//! Same seed, same run. In its own test binary: burn's CPU device RNG (dropout, init) is shared by
//! every thread of a process, so concurrently running tests would draw from it in between.

use burn::tensor::Device;
use pulserec_core::ItemId;
use pulserec_seqrec::{SasRecConfig, TrainConfig, TrainData, train};

#[test]
fn training_is_reproducible_for_a_seed() {
    let seqs: Vec<Vec<ItemId>> = (0..16u32)
        .map(|u| (0..6).map(|t| ItemId((u * 3 + t) % 20 + 1)).collect())
        .collect();
    let data = TrainData {
        train: seqs.iter().map(|s| &s[..]).collect(),
        ..TrainData::default()
    };
    let model_config = SasRecConfig::paper(20).with_hidden(8).with_max_len(6);
    let run = || {
        let config = TrainConfig::paper()
            .with_epochs(3)
            .with_batch_size(4)
            .with_seed(11);
        let out = train(&model_config, &config, &data, &Device::flex(), None).unwrap();
        out.epochs.iter().map(|e| e.loss).collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let other = TrainConfig::paper()
        .with_epochs(3)
        .with_batch_size(4)
        .with_seed(12);
    let c = train(&model_config, &other, &data, &Device::flex(), None).unwrap();
    assert_ne!(a[0], c.epochs[0].loss);
}
