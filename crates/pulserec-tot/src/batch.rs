//! One batched generate call, with the generator's contract checked.

use pulserec_core::{Generation, GenerationRequest, TextGenerator};

use crate::error::{Result, TotError};

/// Runs `requests` through `generator` in one call and checks that one generation came back
/// per request (the batch is later zipped with its requests; a short answer must not shift it).
pub(crate) fn generate_exact<G: TextGenerator>(
    generator: &mut G,
    requests: &[GenerationRequest],
) -> Result<Vec<Generation>> {
    let generations = generator.generate(requests).map_err(TotError::Generate)?;
    if generations.len() != requests.len() {
        return Err(TotError::GenerationCount {
            expected: requests.len(),
            got: generations.len(),
        });
    }
    Ok(generations)
}
