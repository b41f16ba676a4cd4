//! Settings in SSM Parameter Store, past Lambda's 4 KB environment limit.

use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::*;
use crate::port::Parameters;
use crate::settings::PARAMETER_PATH;

impl Aws {
    pub async fn settings_parameters(
        &self,
        which: Parameters<'_>,
    ) -> Result<Vec<(String, String)>, Error> {
        match which {
            Parameters::One(name) => match self.ssm.get_parameter().name(name).send().await {
                Ok(out) => Ok(out
                    .parameter()
                    .and_then(|p| Some((p.name()?.to_owned(), p.value()?.to_owned())))
                    .into_iter()
                    .collect()),
                Err(err) if err.code() == Some("ParameterNotFound") => Ok(Vec::new()),
                Err(err) => Err(aws_error("GetParameter")(err)),
            },
            Parameters::All => {
                let mut all = Vec::new();
                let mut next_token = None;
                loop {
                    let page = self
                        .ssm
                        .get_parameters_by_path()
                        .path(PARAMETER_PATH)
                        .recursive(false)
                        .set_next_token(next_token)
                        .send()
                        .await
                        .map_err(aws_error("GetParametersByPath"))?;
                    all.extend(
                        page.parameters()
                            .iter()
                            .filter_map(|p| Some((p.name()?.to_owned(), p.value()?.to_owned()))),
                    );
                    next_token = page.next_token().map(str::to_owned);
                    if next_token.is_none() {
                        return Ok(all);
                    }
                }
            }
        }
    }
}
